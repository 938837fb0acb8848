//! The one custom op the methods' backward rules need, on every device: a tensor whose value is
//! given and whose gradient to another tensor is any function of the incoming gradient.
//!
//! Guided backprop, deconvolution, the gradient captures of Grad-CAM and Chefer and DeepLift's
//! Rescale rule are all "this value, and backward this rule". candle records custom backward
//! passes only through custom ops, whose forward is a kernel per device; here that kernel is a
//! strided copy, which every backend has ([`BackendStorage::copy_strided_src`]), and the rule
//! is written with tensor ops, so it runs where the tensors live — no copy to the host.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// `value` in the forward pass; backward, the gradient `g` arriving at the result reaches `x`
/// as `backward(g)` (which must have `x`'s shape) and nothing reaches `value` — PyTorch's
/// `torch.autograd.Function` with a forward that returns `value`.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// // A ReLU whose backward clamps the gradient as well (guided backpropagation).
/// let x = Var::new(&[-1f32, 2.0, 3.0], &Device::Cpu)?;
/// let open = x.gt(0f64)?.to_dtype(x.dtype())?;
/// let y = tgc_explain::custom_backward(x.as_tensor(), &x.relu()?, move |g| g.relu()?.mul(&open))?;
/// let grads = (y * Tensor::new(&[1f32, 1.0, -1.0], &Device::Cpu)?)?.sum_all()?.backward()?;
/// assert_eq!(grads.get(x.as_tensor()).unwrap().to_vec1::<f32>()?, vec![0.0, 1.0, 0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn custom_backward<F>(x: &Tensor, value: &Tensor, backward: F) -> candle_core::Result<Tensor>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    if !x.device().same_device(value.device()) {
        candle_core::bail!("custom_backward: the input is on {:?}, the value on {:?}", x.device().location(), value.device().location());
    }
    x.apply_op2(&value.detach(), Rule(backward))
}

/// An identity in the forward pass whose backward is `backward(g)`.
pub fn identity_with_backward<F>(x: &Tensor, backward: F) -> candle_core::Result<Tensor>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    custom_backward(x, x, backward)
}

struct Rule<F>(F);

/// A copy of a strided storage, on its own device: the forward of [`Rule`] on every backend.
fn copy<S>(storage: &S, layout: &Layout) -> candle_core::Result<(S, Shape)>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    let shape = layout.shape().clone();
    // SAFETY: `copy_strided_src` writes every element of the new storage before it is read.
    let mut out = unsafe { storage.device().alloc_uninit(&shape, storage.dtype())? };
    storage.copy_strided_src(&mut out, 0, layout)?;
    Ok((out, shape))
}

impl<F> CustomOp2 for Rule<F>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "custom-backward"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, value: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        copy(value, layout)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        value: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        copy(value, layout)
    }

    fn bwd(&self, x: &Tensor, _value: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = (self.0)(grad_res)?;
        if g.dims() != x.dims() {
            candle_core::bail!("custom_backward: the rule gave a gradient {:?} for an input {:?}", g.dims(), x.dims());
        }
        Ok((Some(g), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn the_value_goes_forward_and_the_rule_backward_even_from_a_strided_value() {
        let x = Var::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let value = x.as_tensor().t().unwrap(); // not contiguous
        let y = custom_backward(x.as_tensor(), &value, |g| g.affine(10.0, 0.0)?.t()).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![1.0, 3.0], vec![2.0, 4.0]]);
        let w = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let grads = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        // dL/dy = w; the rule sends 10·wᵀ to x (and nothing through `value`'s own graph).
        assert_eq!(grads.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap(), vec![vec![10.0, 30.0], vec![20.0, 40.0]]);
    }

    #[test]
    fn a_rule_of_the_wrong_shape_is_an_error() {
        let x = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let y = identity_with_backward(x.as_tensor(), |g| g.sum_all()).unwrap();
        assert!(y.sum_all().unwrap().backward().unwrap_err().to_string().contains("custom_backward"));
    }
}
