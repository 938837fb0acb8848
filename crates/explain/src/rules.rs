//! DeepLift's backward rules (Captum's `DeepLift`, Rescale rule), applied by [`crate::Hooks`]
//! to the nonlinearities a model marks while a DeepLift pass runs.
//!
//! The pass runs on `2·B` rows: the inputs, then their references (baselines), pair `p` being
//! rows `p` and `p + B`. Each rule op keeps what its forward saw and, backward, replaces the
//! gradient at its input with the multiplier `grad_out · Δout / Δin` (Δ = input row − reference
//! row, the same for both rows of a pair), or the ordinary gradient where `|Δin| < eps`:
//! - elementwise nonlinearities (ReLU, sigmoid, tanh, ELU, …): Captum's `nonlinear`;
//! - 2-D max-pooling: Captum's `maxpool2d` — the pair's cross maximum, the gradient times Δout
//!   routed to each half's argmax with `max_unpool2d` (one write per input position: where
//!   windows share an argmax the last window in row-major order wins, as PyTorch's CPU kernel
//!   does), divided by Δin.
//!
//! Captum hooks tensors, not ops: when a marked op's input is the output of the marked op just
//! before it (ResNet's ReLU → max-pool stem), the earlier op's rule reads the gradient at that
//! tensor *before* the later op's rule replaced it (the ordinary backward of the later op), and
//! the replaced gradient only where its own `|Δin| < eps`. [`RawLink`] carries that gradient.

use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};

use crate::custom_grad::custom_backward;

/// Where a rule op leaves, for the op before it, the difference between the ordinary gradient
/// at its input and the gradient its rule put there (see the module's docs).
#[derive(Clone, Default)]
pub(crate) struct RawLink(Arc<Mutex<Option<Tensor>>>);

impl RawLink {
    fn put(&self, difference: Tensor) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(difference);
        }
    }

    fn take(&self) -> Option<Tensor> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }

    /// The gradient at the op's output before the next op's rule replaced it: `g` plus the
    /// difference that op left (`g` itself when none was left).
    fn raw(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        match self.take() {
            Some(difference) => g + difference,
            None => Ok(g.clone()),
        }
    }
}

/// The f32 values of a tensor, on the CPU, in row-major order.
fn values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.detach().to_device(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()
}

/// Each row's difference from its pair's other row: `v[p] − v[p + B]` for both rows of pair
/// `p` (`pairs` = B), as a tensor on `v`'s device.
fn pair_delta_tensor(v: &Tensor, pairs: usize) -> candle_core::Result<Tensor> {
    let d = (v.narrow(0, 0, pairs)? - v.narrow(0, pairs, pairs)?)?;
    Tensor::cat(&[&d, &d], 0)
}

/// Row `i`'s difference from its pair's other row: `v[p] − v[p + B]` for both rows of pair `p`
/// (`per_row` values a row, `pairs` = B).
fn pair_delta(v: &[f32], pairs: usize, per_row: usize) -> Vec<f32> {
    let half = pairs * per_row;
    let mut d = Vec::with_capacity(v.len());
    for _ in 0..2 {
        d.extend(v[..half].iter().zip(&v[half..]).map(|(a, b)| a - b));
    }
    d
}

/// Checks a tensor holds `2·pairs` rows.
fn check_rows(t: &Tensor, pairs: usize, what: &str) -> candle_core::Result<usize> {
    let rows = t.dim(0)?;
    if rows != 2 * pairs {
        candle_core::bail!("DeepLift: {what} has {rows} rows, not the {} of {pairs} inputs and their references", 2 * pairs);
    }
    Ok(t.elem_count() / rows.max(1))
}

/// Captum's `nonlinear` rule for `y = f(x)` elementwise, backward:
/// `where(|Δx| < eps, g·f′(x), g_raw·Δy/Δx)`, in tensor ops on the tensors' device.
struct Rescale {
    dx: Tensor,
    dy: Tensor,
    derivative: Tensor,
    eps: f32,
    /// The gradient difference the next marked op leaves when its input is this op's output.
    raw: RawLink,
    /// Where this op leaves its own, when its input is the previous marked op's output.
    feeds: Option<RawLink>,
}

impl Rescale {
    fn backward(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        let raw = self.raw.raw(g)?;
        let ordinary = (g * &self.derivative)?;
        let rule = ((raw * &self.dy)? / &self.dx)?;
        let small = self.dx.abs()?.lt(self.eps as f64)?;
        let out = small.where_cond(&ordinary, &rule)?;
        if let Some(link) = &self.feeds {
            link.put((ordinary - &out)?);
        }
        Ok(out)
    }
}

/// The window of a 2-D max-pool, with PyTorch's semantics (−∞ padding, floor mode, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Square kernel side.
    pub kernel: usize,
    /// Stride along both axes.
    pub stride: usize,
    /// Implicit padding on every side (at most half the kernel).
    pub padding: usize,
}

impl MaxPool2d {
    fn out(&self, size: usize) -> candle_core::Result<usize> {
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel || size + 2 * self.padding < self.kernel {
            candle_core::bail!("max_pool2d: kernel {}, stride {}, padding {} on a side of {size}", self.kernel, self.stride, self.padding);
        }
        Ok((size + 2 * self.padding - self.kernel) / self.stride + 1)
    }

    fn window(&self, o: usize, size: usize) -> std::ops::Range<usize> {
        let start = (o * self.stride) as isize - self.padding as isize;
        start.max(0) as usize..((start + self.kernel as isize) as usize).min(size)
    }

    /// Each plane's pooled values and the flat in-plane index of each window's first maximum.
    fn pool(&self, x: &[f32], planes: usize, (h, w): (usize, usize)) -> candle_core::Result<(Vec<f32>, Vec<usize>)> {
        let (oh, ow) = (self.out(h)?, self.out(w)?);
        let mut values = Vec::with_capacity(planes * oh * ow);
        let mut argmax = Vec::with_capacity(planes * oh * ow);
        for plane in x.chunks(h * w).take(planes) {
            for oy in 0..oh {
                for ox in 0..ow {
                    let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
                    for iy in self.window(oy, h) {
                        for ix in self.window(ox, w) {
                            let v = plane[iy * w + ix];
                            if at == usize::MAX || v > best || v.is_nan() {
                                (best, at) = (v, iy * w + ix);
                                if v.is_nan() {
                                    break;
                                }
                            }
                        }
                    }
                    values.push(best);
                    argmax.push(at);
                }
            }
        }
        Ok((values, argmax))
    }
}

/// Captum's `maxpool2d` rule (see the module's docs) over `[2B, C, H, W]`.
struct MaxPoolRule {
    pairs: usize,
    dims: (usize, usize, usize),
    out_dims: (usize, usize),
    dx: Vec<f32>,
    out: Vec<f32>,
    argmax: Vec<usize>,
    eps: f32,
    raw: RawLink,
    feeds: Option<RawLink>,
}

impl MaxPoolRule {
    /// The rule's gradient at the pool's input: Captum's max-unpooling, computed on the host
    /// (its argmax writes are one per position, last window wins — not a tensor op candle has).
    fn backward(&self, x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
        let raw = values(&self.raw.raw(g)?)?;
        let g = values(g)?;
        let (c, h, w) = self.dims;
        let (plane_in, plane_out) = (h * w, self.out_dims.0 * self.out_dims.1);
        let half_planes = self.pairs * c;
        let half_in = half_planes * plane_in;
        // The ordinary gradient: each window's gradient added at its argmax.
        let mut ordinary = vec![0f32; 2 * half_in];
        for (plane, (gs, at)) in g.chunks(plane_out).zip(self.argmax.chunks(plane_out)).enumerate() {
            for (gv, &i) in gs.iter().zip(at) {
                ordinary[plane * plane_in + i] += gv;
            }
        }
        // max_unpool2d(g · Δout) of each half, one write per position, added over the halves.
        let mut unpooled = vec![0f32; half_in];
        for plane in 0..half_planes {
            let (input, reference) = (plane, plane + half_planes);
            let mut written = vec![0f32; 2 * plane_in];
            for j in 0..plane_out {
                let (o, o_ref) = (self.out[input * plane_out + j], self.out[reference * plane_out + j]);
                let cross = o.max(o_ref);
                written[self.argmax[input * plane_out + j]] = raw[input * plane_out + j] * (cross - o_ref);
                written[plane_in + self.argmax[reference * plane_out + j]] = raw[reference * plane_out + j] * (o - cross);
            }
            for (k, u) in unpooled[plane * plane_in..(plane + 1) * plane_in].iter_mut().enumerate() {
                *u = written[k] + written[plane_in + k];
            }
        }
        // Where the input did not change, the ordinary gradient (Captum uses the batch's first
        // row's, `grad_input[0]`; here each pair's input row's, which is Captum's when it runs
        // one image at a time).
        let mut result = Vec::with_capacity(2 * half_in);
        for half in 0..2 {
            for k in 0..half_in {
                let d = self.dx[half * half_in + k];
                result.push(if d.abs() < self.eps { ordinary[k] } else { unpooled[k] / d });
            }
        }
        if let Some(link) = &self.feeds {
            let difference: Vec<f32> = ordinary.iter().zip(&result).map(|(o, r)| o - r).collect();
            link.put(Tensor::from_vec(difference, x.shape(), &Device::Cpu)?.to_device(x.device())?);
        }
        Tensor::from_vec(result, x.shape(), &Device::Cpu)?.to_device(x.device())
    }
}

/// The DeepLift state of one pass: the pair count, eps, and the last marked op's output (for
/// the tensor-sharing rule of the module's docs).
#[derive(Default)]
pub(crate) struct DeepLiftPass {
    pub(crate) pairs: usize,
    pub(crate) eps: f32,
    last: Option<(candle_core::TensorId, RawLink)>,
}

impl DeepLiftPass {
    pub(crate) fn new(pairs: usize, eps: f32) -> Self {
        Self { pairs, eps, last: None }
    }

    /// The link to the previous marked op when `x` is its output.
    fn feeds(&self, x: &Tensor) -> Option<RawLink> {
        self.last.as_ref().filter(|(id, _)| *id == x.id()).map(|(_, link)| link.clone())
    }

    /// `y = f(x)` elementwise under the Rescale rule; `derivative` is f′(x).
    pub(crate) fn rescale(&mut self, x: &Tensor, y: &Tensor, derivative: &Tensor) -> candle_core::Result<Tensor> {
        check_rows(x, self.pairs, "a nonlinearity's input")?;
        if y.dims() != x.dims() {
            candle_core::bail!("DeepLift: an elementwise nonlinearity changed the shape {:?} to {:?}", x.dims(), y.dims());
        }
        let raw = RawLink::default();
        let rule = Rescale {
            dx: pair_delta_tensor(&x.detach(), self.pairs)?,
            dy: pair_delta_tensor(&y.detach(), self.pairs)?,
            derivative: derivative.detach(),
            eps: self.eps,
            raw: raw.clone(),
            feeds: self.feeds(x),
        };
        let out = custom_backward(x, y, move |g| rule.backward(g))?;
        self.last = Some((out.id(), raw));
        Ok(out)
    }

    /// 2-D max-pooling of `x` `[2B, C, H, W]` under Captum's max-pool rule.
    pub(crate) fn max_pool2d(&mut self, x: &Tensor, pool: MaxPool2d) -> candle_core::Result<Tensor> {
        let (rows, c, h, w) = x.dims4()?;
        check_rows(x, self.pairs, "a max-pool's input")?;
        let xv = values(x)?;
        let (out, argmax) = pool.pool(&xv, rows * c, (h, w))?;
        let out_dims = (pool.out(h)?, pool.out(w)?);
        let value = Tensor::from_slice(&out, (rows, c, out_dims.0, out_dims.1), &Device::Cpu)?.to_device(x.device())?;
        let raw = RawLink::default();
        let rule = MaxPoolRule {
            pairs: self.pairs,
            dims: (c, h, w),
            out_dims,
            dx: pair_delta(&xv, self.pairs, c * h * w),
            out,
            argmax,
            eps: self.eps,
            raw: raw.clone(),
            feeds: self.feeds(x),
        };
        let input = x.detach();
        let y = custom_backward(x, &value, move |g| rule.backward(&input, g))?;
        self.last = Some((y.id(), raw));
        Ok(y)
    }
}
