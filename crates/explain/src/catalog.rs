//! The one table of the built-in methods: name, title, what each needs of a model, and how it
//! is built from common settings. Command lines and reports read their method lists here.

use crate::attention::{AttentionRollout, Chefer, HeadFusion};
use crate::attribute::Method;
use crate::cam::{Cam, CamKind};
use crate::deeplift::{DeepLift, DeepLiftShap};
use crate::error::{ExplainError, Result};
use crate::gradient::{
    Baselines, Deconvolution, GradCam, GradientShap, GradientShapConfig, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,
    IntegratedGradientsConfig, Saliency,
};
use crate::layer_integrated::LayerIntegratedGradients;
use crate::perturbation::{FeatureAblation, FeatureMask, Occlusion};
use crate::shapley::{FeaturePermutation, ShapleyValueSampling, ShapleyValues};
use crate::surrogate::{KernelShap, Lime};

/// What a method needs of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The input gradient (a differentiable forward pass).
    Gradient,
    /// The input gradient with the model's ReLUs marked ([`crate::Hooks::relu`]).
    GuidedRelus,
    /// The input gradient with the model's nonlinearities marked: ReLUs, other elementwise
    /// nonlinearities and max-pools ([`crate::Hooks::relu`], [`crate::Hooks::nonlinear`],
    /// [`crate::Hooks::max_pool2d`]).
    Nonlinearities,
    /// A marked layer ([`crate::Hooks::layer`]) and its gradient.
    Layer,
    /// A marked layer's activation only (forward passes).
    LayerForward,
    /// The attention maps ([`crate::Hooks::attention`]).
    Attention,
    /// Forward passes only: any model.
    ForwardOnly,
}

/// The settings the built-in methods are made from (the command line's options); `None`
/// takes each method's own default.
#[derive(Debug, Clone, Default)]
pub struct MethodSettings {
    /// Samples: GradientSHAP's (default 5), Shapley value sampling's orders (25),
    /// KernelSHAP's (25) and LIME's (50) coalitions.
    pub samples: Option<usize>,
    /// GradientSHAP's input noise.
    pub stdevs: Option<f32>,
    /// The baselines of GradientSHAP (default: the zero image), DeepLift (one baseline per
    /// image; default zero) and DeepLiftShap (a distribution of two or more; no default).
    pub baselines: Option<Baselines>,
    /// Integrated Gradients' and Layer Integrated Gradients' steps (default 50).
    pub steps: Option<usize>,
    /// Seed of every sampling method.
    pub seed: u64,
    /// Rows per forward/backward batch of GradientSHAP and Integrated Gradients.
    pub internal_batch_size: Option<usize>,
    /// Score-CAM / Ablation-CAM batch, and perturbed samples per forward pass of the
    /// perturbation methods.
    pub batch_size: Option<usize>,
    /// Occlusion's square window and stride, in pixels (default 16 and 8).
    pub window: Option<usize>,
    /// Occlusion's stride.
    pub stride: Option<usize>,
    /// The side of the square pixel blocks that are one feature each (Feature Ablation and the
    /// forward-only Shapley, LIME and permutation methods); `None`: Feature Ablation's 16, one
    /// feature per element for the others.
    pub grid: Option<usize>,
    /// Attention rollout's head fusion and discard ratio.
    pub head_fusion: HeadFusion,
    /// Attention rollout's discard ratio.
    pub discard_ratio: f32,
}

impl MethodSettings {
    fn positive(value: Option<usize>, what: &str) -> Result<Option<usize>> {
        match value {
            Some(0) => Err(ExplainError::Invalid(format!("{what} must be at least 1"))),
            other => Ok(other),
        }
    }

    fn mask(&self) -> Result<FeatureMask> {
        Ok(match Self::positive(self.grid, "the grid")? {
            Some(g) => FeatureMask::Grid(g),
            None => FeatureMask::Elements,
        })
    }

    fn per_eval(&self) -> Result<Option<usize>> {
        Self::positive(self.batch_size, "the batch size")
    }
}

/// One built-in method: its name, its title in figures and tables, what it needs, and its
/// constructor.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// The command-line name (`gradcam`, `kernel-shap`, …), also [`crate::Attribute::name`].
    pub name: &'static str,
    /// The title in figures and tables (`GradCam`, `Kernel SHAP`, …).
    pub title: &'static str,
    /// What it needs of a model.
    pub needs: Needs,
    build: fn(&MethodSettings) -> Result<Method>,
}

impl MethodInfo {
    /// The method with `settings`.
    pub fn build(&self, settings: &MethodSettings) -> Result<Method> {
        (self.build)(settings)
    }
}

fn cam(kind: CamKind, s: &MethodSettings) -> Result<Method> {
    let mut cam = Cam::new(kind);
    if let Some(b) = s.per_eval()? {
        cam.batch_size = b;
    }
    Ok(Method::new(cam))
}

macro_rules! info {
    ($name:literal, $title:literal, $needs:ident, $build:expr) => {
        MethodInfo { name: $name, title: $title, needs: Needs::$needs, build: $build }
    };
}

/// Every built-in method, in the order the command line lists them.
pub const METHODS: &[MethodInfo] = &[
    info!("gradcam", "GradCam", Layer, |_| Ok(Method::new(GradCam::default()))),
    info!("guided-backprop", "Guided Backprop", GuidedRelus, |_| Ok(Method::new(GuidedBackprop))),
    info!("guided-gradcam", "Guided GradCam", GuidedRelus, |_| Ok(Method::new(GuidedGradCam::default()))),
    info!("gradient-shap", "Gradient SHAP", Gradient, |s| {
        let d = GradientShapConfig::default();
        Ok(Method::new(GradientShap::new(GradientShapConfig {
            n_samples: MethodSettings::positive(s.samples, "GradientSHAP's samples")?.unwrap_or(d.n_samples),
            stdevs: s.stdevs.unwrap_or(d.stdevs),
            baselines: s.baselines.clone().unwrap_or(d.baselines),
            seed: s.seed,
            batch_size: s.internal_batch_size,
        })))
    }),
    info!("saliency", "Saliency", Gradient, |_| Ok(Method::new(Saliency))),
    info!("input-x-gradient", "Input x Gradient", Gradient, |_| Ok(Method::new(InputXGradient))),
    info!("integrated-gradients", "Integrated Gradients", Gradient, |s| {
        Ok(Method::new(IntegratedGradients::new(IntegratedGradientsConfig {
            steps: MethodSettings::positive(s.steps, "Integrated Gradients' steps")?.unwrap_or(50),
            internal_batch_size: s.internal_batch_size,
            baseline: None,
        })))
    }),
    info!("deeplift", "DeepLift", Nonlinearities, |s| {
        Ok(Method::new(DeepLift { baselines: s.baselines.clone().unwrap_or_default(), batch_size: s.internal_batch_size, ..DeepLift::default() }))
    }),
    info!("deeplift-shap", "DeepLiftShap", Nonlinearities, |s| {
        let baselines = s.baselines.clone().ok_or_else(|| {
            ExplainError::Invalid("DeepLiftShap needs a baseline distribution of two or more images (--baselines FILE, uniform or gaussian)".into())
        })?;
        Ok(Method::new(DeepLiftShap { batch_size: s.internal_batch_size, ..DeepLiftShap::new(baselines) }))
    }),
    info!("deconvolution", "Deconvolution", GuidedRelus, |_| Ok(Method::new(Deconvolution))),
    info!("layer-integrated-gradients", "Layer Integrated Gradients", Layer, |s| {
        Ok(Method::new(LayerIntegratedGradients {
            steps: MethodSettings::positive(s.steps, "Layer Integrated Gradients' steps")?.unwrap_or(50),
            internal_batch_size: s.internal_batch_size,
            ..LayerIntegratedGradients::default()
        }))
    }),
    info!("hirescam", "HiResCAM", Layer, |s| cam(CamKind::HiResCam, s)),
    info!("gradcam++", "Grad-CAM++", Layer, |s| cam(CamKind::GradCamPlusPlus, s)),
    info!("xgradcam", "XGrad-CAM", Layer, |s| cam(CamKind::XGradCam, s)),
    info!("layercam", "LayerCAM", Layer, |s| cam(CamKind::LayerCam, s)),
    info!("scorecam", "Score-CAM", LayerForward, |s| cam(CamKind::ScoreCam, s)),
    info!("ablationcam", "Ablation-CAM", LayerForward, |s| cam(CamKind::AblationCam, s)),
    info!("eigencam", "EigenCAM", LayerForward, |s| cam(CamKind::EigenCam, s)),
    info!("eigengradcam", "EigenGradCAM", Layer, |s| cam(CamKind::EigenGradCam, s)),
    info!("occlusion", "Occlusion", ForwardOnly, |s| {
        let window = MethodSettings::positive(s.window, "the occlusion window")?.unwrap_or(16);
        let stride = MethodSettings::positive(s.stride, "the occlusion stride")?.unwrap_or(8);
        let d = Occlusion::default();
        Ok(Method::new(Occlusion { window: (window, window), stride: (stride, stride), batch_size: s.per_eval()?.unwrap_or(d.batch_size), ..d }))
    }),
    info!("feature-ablation", "Feature Ablation", ForwardOnly, |s| {
        let grid = MethodSettings::positive(s.grid, "the grid")?.unwrap_or(16);
        Ok(Method::new(FeatureAblation { batch_size: s.per_eval()?.unwrap_or(16), ..FeatureAblation::grid(grid) }))
    }),
    info!("shapley-value-sampling", "Shapley Value Sampling", ForwardOnly, |s| {
        let d = ShapleyValueSampling::default();
        Ok(Method::new(ShapleyValueSampling {
            mask: s.mask()?,
            n_samples: MethodSettings::positive(s.samples, "the samples")?.unwrap_or(d.n_samples),
            perturbations_per_eval: s.per_eval()?.unwrap_or(d.perturbations_per_eval),
            seed: s.seed,
            ..d
        }))
    }),
    info!("shapley-values", "Shapley Values", ForwardOnly, |s| {
        let d = ShapleyValues::default();
        Ok(Method::new(ShapleyValues { mask: s.mask()?, perturbations_per_eval: s.per_eval()?.unwrap_or(d.perturbations_per_eval), ..d }))
    }),
    info!("kernel-shap", "Kernel SHAP", ForwardOnly, |s| {
        let d = KernelShap::default();
        Ok(Method::new(KernelShap {
            mask: s.mask()?,
            n_samples: MethodSettings::positive(s.samples, "the samples")?.unwrap_or(d.n_samples),
            perturbations_per_eval: s.per_eval()?.unwrap_or(d.perturbations_per_eval),
            seed: s.seed,
            ..d
        }))
    }),
    info!("lime", "LIME", ForwardOnly, |s| {
        let d = Lime::default();
        Ok(Method::new(Lime {
            mask: s.mask()?,
            n_samples: MethodSettings::positive(s.samples, "the samples")?.unwrap_or(d.n_samples),
            perturbations_per_eval: s.per_eval()?.unwrap_or(d.perturbations_per_eval),
            seed: s.seed,
            ..d
        }))
    }),
    info!("feature-permutation", "Feature Permutation", ForwardOnly, |s| {
        let d = FeaturePermutation::default();
        Ok(Method::new(FeaturePermutation { mask: s.mask()?, perturbations_per_eval: s.per_eval()?.unwrap_or(d.perturbations_per_eval), seed: s.seed }))
    }),
    info!("attention-rollout", "Attention Rollout", Attention, |s| {
        if !(0.0..1.0).contains(&s.discard_ratio) {
            return Err(ExplainError::Invalid(format!("the discard ratio must be in [0, 1), got {}", s.discard_ratio)));
        }
        Ok(Method::new(AttentionRollout { head_fusion: s.head_fusion, discard_ratio: s.discard_ratio }))
    }),
    info!("chefer", "Chefer et al.", Attention, |_| Ok(Method::new(Chefer))),
];

/// The built-in method named `name`, or an error listing the names there are.
pub fn method_info(name: &str) -> Result<&'static MethodInfo> {
    METHODS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        ExplainError::Invalid(format!("unknown method `{name}` (one of: {})", names.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_named_as_its_table_row_and_names_are_unique() {
        let settings = MethodSettings { grid: Some(8), baselines: Some(Baselines::ZerosAndInput), ..MethodSettings::default() };
        for (i, info) in METHODS.iter().enumerate() {
            assert_eq!(info.build(&settings).unwrap().name(), info.name);
            assert!(METHODS[..i].iter().all(|m| m.name != info.name), "{} twice", info.name);
        }
        assert!(method_info("nope").unwrap_err().to_string().contains("kernel-shap"));
    }
}
