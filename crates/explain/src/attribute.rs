//! The one trait every attribution method implements ([`Attribute`]), the checked result it
//! returns, and [`Method`]: any method, built-in or a user's, as a cloneable value that runs
//! alone, under a noise tunnel, or with others sharing their passes.

use std::any::Any;
use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{ExplainError, Result};
use crate::model::Model;

/// The result of a method.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// Shaped like the input (`[B, 1, …spatial]` for the layer methods), at its resolution.
    pub attribution: Tensor,
    /// The layer methods' layer-resolution result: the CAM map before ReLU `[B, …layer
    /// spatial]`; Layer Integrated Gradients' attribution shaped like the layer `[B, K, …]`.
    pub layer_attribution: Option<Tensor>,
    /// The model's logits on the (unperturbed) input, `[B, classes]`, when the method's passes
    /// computed them ([`Method::attribute_all`] fills them in for every method).
    pub logits: Option<Tensor>,
    /// Captum's convergence delta `[B]`, for the methods that return one (Integrated Gradients,
    /// DeepLift, DeepLiftShap, Layer Integrated Gradients): Σ attribution − (f(x) − f(baseline))
    /// at the target, the gap in completeness.
    pub convergence_delta: Option<Tensor>,
}

impl Attribution {
    /// A map with nothing else.
    pub fn map(attribution: Tensor) -> Self {
        Self { attribution, layer_attribution: None, logits: None, convergence_delta: None }
    }
}

/// What [`Attribute::compute`] returns: an [`Attribution`] that can only be read through the
/// crate's non-finite check ([`Attribute::attribute`], [`Method::attribute_all`],
/// [`crate::NoiseTunnel`]), so a NaN never leaves a method silently.
#[derive(Debug, Clone)]
pub struct Unchecked(Attribution);

impl Unchecked {
    /// Wraps a method's result.
    pub fn new(attribution: Attribution) -> Self {
        Self(attribution)
    }

    /// The attribution, or an error naming `method` when its logits or map hold a NaN or an
    /// infinity.
    pub(crate) fn check(self, method: &str) -> Result<Attribution> {
        let out = self.0;
        for (what, t) in [("logits", out.logits.as_ref()), ("attribution", Some(&out.attribution)), ("convergence delta", out.convergence_delta.as_ref())] {
            if let Some((count, first)) = t.map(crate::check::non_finite).transpose()?.flatten() {
                return Err(ExplainError::NonFinite { method: method.to_owned(), what, count, first });
            }
        }
        Ok(out)
    }
}

/// An attribution method: a small value holding its settings, with a name and one verb.
/// Implement [`Attribute::name`] and [`Attribute::compute`]; call [`Attribute::attribute`],
/// which checks the result (leave it as it is). A method of your own then runs wherever the
/// built-in ones do: in [`Method`], under [`crate::NoiseTunnel`], in
/// [`Method::attribute_all`].
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tgc_explain::{Attribute, Attribution, FnModel, Hooks, Model, Unchecked};
///
/// /// The input itself, as a (poor) attribution.
/// #[derive(Debug)]
/// struct Identity;
///
/// impl Attribute for Identity {
///     fn name(&self) -> String {
///         "identity".into()
///     }
///     fn compute(&self, model: &dyn Model, input: &Tensor, _targets: &[usize]) -> tgc_explain::Result<Unchecked> {
///         let logits = model.forward(input, &Hooks::none())?;
///         Ok(Unchecked::new(Attribution { logits: Some(logits), ..Attribution::map(input.clone()) }))
///     }
/// }
///
/// let model = FnModel(|x: &Tensor| x.sum_keepdim(1));
/// let x = Tensor::new(&[[1f32, f32::NAN]], &Device::Cpu)?;
/// assert!(Identity.attribute(&model, &x, &[0]).unwrap_err().to_string().contains("identity"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Attribute: Send + Sync + std::fmt::Debug {
    /// The method's name (the command line's, `gradcam`, `kernel-shap`, …).
    fn name(&self) -> String;

    /// Runs the method on an input batch `[B, …]` with one target class per sample.
    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked>;

    /// Runs the method; a NaN or infinity in its logits or attribution is an error naming the
    /// method, never a silent NaN map.
    fn attribute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        self.compute(model, input, targets)?.check(&self.name())
    }

    /// The same method explaining `layer`, for a layer method; `None` (the default) for others.
    fn with_layer(&self, layer: &str) -> Option<Method> {
        let _ = layer;
        None
    }

    /// The method as `Any`, which lets [`Method::attribute_all`] share passes between the
    /// built-in methods that can; leave the default (`None`) for a method of your own.
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }

    /// Whether the attribution is a gradient-like sensitivity multiplied by (input − baseline)
    /// (Captum's `multiplies_by_inputs`: Input×Gradient, Integrated Gradients, GradientSHAP,
    /// DeepLift, DeepLiftShap); [`crate::faithfulness::infidelity`] then divides its
    /// perturbations by (input − baseline), as Captum's `infidelity_perturb_func_decorator`.
    /// Default: `false`.
    fn multiplies_by_inputs(&self) -> bool {
        false
    }
}

/// Any method, built-in or a user's, chosen at run time: a cheap-to-clone handle.
#[derive(Clone)]
pub struct Method(Arc<dyn Attribute>);

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Method {
    /// Any method as a `Method`.
    pub fn new(method: impl Attribute + 'static) -> Self {
        Self(Arc::new(method))
    }

    /// The method's name.
    pub fn name(&self) -> String {
        self.0.name()
    }

    /// Runs the method, checked for non-finite numbers (see [`Attribute::attribute`]).
    pub fn attribute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Attribution> {
        self.0.compute(model, input, targets)?.check(&self.0.name())
    }

    /// The method itself.
    pub fn inner(&self) -> &dyn Attribute {
        &*self.0
    }

    /// The built-in method of type `T` inside, if that is what this is.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().and_then(|a| a.downcast_ref::<T>())
    }

    /// The same method explaining `layer` when it is a layer method (Grad-CAM, Guided Grad-CAM,
    /// the CAM family, and such a method under a noise tunnel); others unchanged.
    pub fn at_layer(self, layer: &str) -> Method {
        self.0.with_layer(layer).unwrap_or(self)
    }
}

impl Attribute for Method {
    fn name(&self) -> String {
        self.0.name()
    }

    fn compute(&self, model: &dyn Model, input: &Tensor, targets: &[usize]) -> Result<Unchecked> {
        self.0.compute(model, input, targets)
    }

    fn with_layer(&self, layer: &str) -> Option<Method> {
        self.0.with_layer(layer)
    }

    fn as_any(&self) -> Option<&dyn Any> {
        self.0.as_any()
    }

    fn multiplies_by_inputs(&self) -> bool {
        self.0.multiplies_by_inputs()
    }
}

/// Column `target` of logits `[n, classes]`: the target's score of every row.
pub(crate) fn target_column(logits: &Tensor, target: usize) -> Result<Vec<f32>> {
    check_target(target, logits.dim(1)?)?;
    Ok(logits.narrow(1, target, 1)?.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?)
}

/// A target class the model has, or an error naming both.
pub(crate) fn check_target(target: usize, classes: usize) -> Result<()> {
    if target >= classes {
        return Err(ExplainError::Invalid(format!("target class {target} but the model has {classes} classes")));
    }
    Ok(())
}

/// The batch size of an input `[B, …]` with one target per sample.
pub(crate) fn check(input: &Tensor, targets: &[usize]) -> Result<usize> {
    if input.rank() < 2 {
        return Err(ExplainError::Invalid(format!("input must be a batch [B, …] of at least 2 axes, got {:?}", input.dims())));
    }
    let b = input.dim(0)?;
    if targets.len() != b {
        return Err(ExplainError::Invalid(format!("{} targets for a batch of {b}", targets.len())));
    }
    Ok(b)
}

/// An image batch `[B, C, H, W]` with one target per sample (the methods whose windows or
/// blocks are 2-D): `(B, H, W)`.
pub(crate) fn check_image(input: &Tensor, targets: &[usize], method: &str) -> Result<(usize, usize, usize)> {
    check(input, targets)?;
    let (b, _, h, w) = input.dims4().map_err(|_| ExplainError::Invalid(format!("{method} takes images [B, C, H, W], got {:?}", input.dims())))?;
    Ok((b, h, w))
}
