//! ViT in the Hugging Face `transformers` layout of `google/vit-base-patch16-224`:
//! `vit.embeddings.{cls_token,position_embeddings,patch_embeddings.projection}`,
//! `vit.encoder.layer.N.{layernorm_before, attention.attention.{query,key,value},
//! attention.output.dense, layernorm_after, intermediate.dense, output.dense}`, `vit.layernorm`.
//! Checkpoints of a bare `ViTModel` (no `vit.` prefix) load too. Sizes come from `config.json`.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::error::BackboneError;
use tgc_explain::Hooks;

use tgc_kernels::ops::{multi_head_attention, EncoderBlock};

use crate::generic;
use crate::layers::{Conv2d, LayerNorm, Linear, Ops};

/// The fields of a Hugging Face ViT `config.json` that shape the model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VitConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
}

fn default_channels() -> usize {
    3
}

fn default_true() -> bool {
    true
}

impl VitConfig {
    /// `google/vit-base-patch16-224`, used for random weights when no config is given.
    pub fn vit_base_patch16_224() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            image_size: 224,
            patch_size: 16,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
            num_channels: 3,
            qkv_bias: true,
        }
    }

    pub fn from_file(path: &Path) -> std::result::Result<Self, BackboneError> {
        let err = |message: String| BackboneError::Config { path: path.to_owned(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        Activation::parse(&config.hidden_act).map_err(err)?;
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(err(format!("hidden_size {} is not a multiple of num_attention_heads {}", config.hidden_size, config.num_attention_heads)));
        }
        if config.patch_size == 0 || config.image_size % config.patch_size != 0 {
            return Err(err(format!("image_size {} is not a multiple of patch_size {}", config.image_size, config.patch_size)));
        }
        // Bounds well above any ViT on the hub, so that a corrupt config cannot ask for
        // terabytes of weights.
        for (name, value, max) in [
            ("hidden_size", config.hidden_size, 16_384),
            ("num_hidden_layers", config.num_hidden_layers, 256),
            ("intermediate_size", config.intermediate_size, 65_536),
            ("image_size", config.image_size, 4_096),
        ] {
            if value == 0 || value > max {
                return Err(err(format!("{name} {value} is outside 1..={max}")));
            }
        }
        if config.num_channels != 3 {
            return Err(err(format!("num_channels {} (the slices are given as 3 channels)", config.num_channels)));
        }
        if config.grid() * config.grid() > 65_536 {
            return Err(err(format!("{}² patches are too many", config.grid())));
        }
        if !(config.layer_norm_eps > 0.0 && config.layer_norm_eps.is_finite()) {
            return Err(err(format!("layer_norm_eps {} must be a positive number", config.layer_norm_eps)));
        }
        Ok(config)
    }

    /// Patches per side (14 for B/16 at 224).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    /// `gelu` in transformers: the exact erf form.
    GeluErf,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> std::result::Result<Self, String> {
        match name {
            "gelu" => Ok(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            other => Err(format!("hidden_act `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)")),
        }
    }

    fn forward(self, x: &Tensor, hooks: &Hooks, generic: bool) -> Result<Tensor> {
        let gelu = if generic { generic::gelu } else { tgc_kernels::ops::gelu };
        match self {
            Self::GeluErf => gelu(x, true),
            Self::GeluTanh => gelu(x, false),
            Self::Relu => hooks.relu(x),
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    /// `query`, `key` and `value` as one layer (outputs `[Q | K | V]`).
    qkv: Linear,
    output: Linear,
    heads: usize,
    generic: bool,
}

impl Attention {
    fn new(cfg: &VitConfig, vb: VarBuilder, generic: bool) -> Result<Self> {
        let h = cfg.hidden_size;
        let inner = vb.pp("attention");
        let qkv = |name: &str| Linear::load(h, h, cfg.qkv_bias, inner.pp(name), generic);
        Ok(Self {
            qkv: Linear::concat(&[qkv("query")?, qkv("key")?, qkv("value")?])?,
            output: Linear::load(h, h, true, vb.pp("output").pp("dense"), generic)?,
            heads: cfg.num_attention_heads,
            generic,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.generic {
            return self.forward_composed(x, x.dim(1)?, &mut |probs| Ok(probs.clone()));
        }
        self.output.forward(&multi_head_attention(&self.qkv.forward(x)?, self.heads)?)
    }

    /// The same attention as composed ops, for the queries of the first `queries` tokens (every
    /// token's keys and values), with its probabilities `softmax(QKᵀ/√d)` `[B, heads, queries,
    /// T]` as a tensor of the graph, passed through `tap` (which may record it or hook its
    /// gradient) before they weight the values. Output `[B, queries, D]`.
    fn forward_composed(&self, x: &Tensor, queries: usize, tap: &mut dyn FnMut(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let (b, t, width) = qkv.dims3()?;
        let hidden = width / 3;
        let d = hidden / self.heads;
        // [B, heads, rows, d] of Q, K or V over the first `rows` tokens.
        let part = |i: usize, rows: usize| -> Result<Tensor> {
            qkv.narrow(1, 0, rows)?.narrow(2, i * hidden, hidden)?.reshape((b, rows, self.heads, d))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (part(0, queries)?, part(1, t)?, part(2, t)?);
        let softmax = if self.generic { generic::scaled_softmax_last_dim } else { tgc_kernels::ops::scaled_softmax_last_dim };
        let probs = softmax(&tgc_kernels::ops::matmul(&q, &k.t()?)?, (d as f32).sqrt())?;
        let probs = tap(&probs)?;
        let out = tgc_kernels::ops::matmul(&probs, &v)?.transpose(1, 2)?.contiguous()?.reshape((b, queries, hidden))?;
        self.output.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct Block {
    layernorm_before: LayerNorm,
    attention: Attention,
    layernorm_after: LayerNorm,
    intermediate: Linear,
    output: Linear,
    act: Activation,
    /// The same layers as one op (GELU blocks on the CPU): what `forward` runs.
    fused: Option<Arc<EncoderBlock>>,
}

impl Block {
    fn new(cfg: &VitConfig, act: Activation, vb: VarBuilder, generic: bool) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let mut block = Self {
            layernorm_before: LayerNorm::new(h, eps, vb.pp("layernorm_before"), generic)?,
            attention: Attention::new(cfg, vb.pp("attention"), generic)?,
            layernorm_after: LayerNorm::new(h, eps, vb.pp("layernorm_after"), generic)?,
            intermediate: Linear::load(h, cfg.intermediate_size, true, vb.pp("intermediate").pp("dense"), generic)?,
            output: Linear::load(cfg.intermediate_size, h, true, vb.pp("output").pp("dense"), generic)?,
            act,
            fused: None,
        };
        // ReLU blocks keep the layer-by-layer graph: their guided mode acts inside the block.
        let exact_gelu = match act {
            Activation::GeluErf => Some(true),
            Activation::GeluTanh => Some(false),
            Activation::Relu => None,
        };
        // The device-generic layers have no fused block: `kernel()` is `None` for them.
        block.fused = exact_gelu.and_then(|exact_gelu| {
            Some(Arc::new(EncoderBlock {
                layernorm_before: block.layernorm_before.kernel()?.clone(),
                qkv: block.attention.qkv.kernel()?.clone(),
                output: block.attention.output.kernel()?.clone(),
                layernorm_after: block.layernorm_after.kernel()?.clone(),
                intermediate: block.intermediate.kernel()?.clone(),
                mlp_output: block.output.kernel()?.clone(),
                heads: block.attention.heads,
                exact_gelu,
            }))
        });
        Ok(block)
    }

    /// The block from its `layernorm_before` output on; `residual` is the block's input.
    fn forward_from_norm(&self, normed: &Tensor, residual: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        self.mlp_residual((residual + self.attention.forward(normed)?)?, hooks)
    }

    /// The block's second half: `h + MLP(layernorm_after(h))`, `h` the attention's residual sum.
    fn mlp_residual(&self, h: Tensor, hooks: &Hooks) -> Result<Tensor> {
        let mlp = self.act.forward(&self.intermediate.forward(&self.layernorm_after.forward(&h)?)?, hooks, self.attention.generic)?;
        h + self.output.forward(&mlp)?
    }

    /// [`Block::forward_from_norm`] for the class token alone, `[B, 1, D]`: all the last block
    /// must give the features (the CLS token after the final LayerNorm). Every token's keys and
    /// values are formed — the class token attends to all of them — but the attention, its
    /// output projection, the MLP and the residual adds run for one row instead of `T`: three
    /// quarters of the last block's products, the same function at the class token.
    fn forward_from_norm_cls(&self, normed: &Tensor, residual: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        let attended = self.attention.forward_composed(normed, 1, &mut |probs| Ok(probs.clone()))?;
        self.mlp_residual((residual.narrow(1, 0, 1)? + attended)?, hooks)
    }

    /// [`Block::forward_from_norm`] with the attention probabilities formed as tensors and
    /// marked in `hooks` (patch grid `grid × grid`).
    fn forward_from_norm_marked(&self, normed: &Tensor, residual: &Tensor, hooks: &Hooks, grid: usize) -> Result<Tensor> {
        let tokens = normed.dim(1)?;
        let attended = self.attention.forward_composed(normed, tokens, &mut |probs| hooks.attention(probs, (grid, grid)))?;
        self.mlp_residual((residual + attended)?, hooks)
    }

    /// The whole block: one fused op for GELU blocks on the CPU, the layers otherwise.
    fn forward(&self, x: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        match &self.fused {
            Some(fused) if x.device().is_cpu() => fused.forward(x),
            _ => self.forward_from_norm(&self.layernorm_before.forward(x)?, x, hooks),
        }
    }
}

/// Vision Transformer encoder; features are the CLS token after the final LayerNorm.
#[derive(Debug, Clone)]
pub struct Vit {
    config: VitConfig,
    patch_embed: Conv2d,
    cls_token: Tensor,
    position_embeddings: Tensor,
    blocks: Vec<Block>,
    layernorm: LayerNorm,
}

impl Vit {
    /// Builds the model on the weights' device, the CPU kernels on the CPU.
    pub fn new(config: &VitConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_ops(config, vb, Ops::Auto)
    }

    /// [`Vit::new`] with the layers run by `ops`.
    pub fn with_ops(config: &VitConfig, vb: VarBuilder, ops: Ops) -> Result<Self> {
        let generic = ops.generic_on(vb.device());
        let act = Activation::parse(&config.hidden_act).map_err(candle_core::Error::msg)?;
        let vb = if !vb.contains_tensor("vit.embeddings.cls_token") && vb.contains_tensor("embeddings.cls_token") { vb } else { vb.pp("vit") };
        let (h, p, c) = (config.hidden_size, config.patch_size, config.num_channels);
        let emb = vb.pp("embeddings");
        let proj = emb.pp("patch_embeddings").pp("projection");
        let tokens = config.grid() * config.grid() + 1;
        let blocks = (0..config.num_hidden_layers).map(|i| Block::new(config, act, vb.pp("encoder").pp("layer").pp(i), generic)).collect::<Result<_>>()?;
        Ok(Self {
            config: config.clone(),
            patch_embed: Conv2d::new(proj.get((h, c, p, p), "weight")?, Some(proj.get(h, "bias")?), p, 0, generic)?,
            cls_token: emb.get((1, 1, h), "cls_token")?,
            position_embeddings: emb.get((1, tokens, h), "position_embeddings")?,
            blocks,
            layernorm: LayerNorm::new(h, config.layer_norm_eps, vb.pp("layernorm"), generic)?,
        })
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, hh, ww) = x.dims4()?;
        let s = self.config.image_size;
        if hh != s || ww != s {
            candle_core::bail!("ViT expects {s}x{s} inputs (config image_size), got {hh}x{ww}");
        }
        let patches = self.patch_embed.forward(x)?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?;
        let cls = self.cls_token.broadcast_as((b, 1, self.config.hidden_size))?;
        Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embeddings)
    }

    /// Number of encoder blocks.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The features `[B, D]` (the CLS token after the final LayerNorm), every block's
    /// `layernorm_before` output marked as layer `block<i>` (tokens, read by the layer methods
    /// as a map of the patch tokens), its attention probabilities marked when a method watches
    /// them, and its ReLUs marked (`hidden_act: relu`). Blocks nothing watches run fused; the
    /// last block runs for the class token only unless the attention is watched.
    pub fn forward(&self, x: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        let mut h = self.embed(x)?;
        let g = self.config.grid();
        let attention = hooks.watches_attention();
        let last = self.blocks.len().saturating_sub(1);
        for (i, block) in self.blocks.iter().enumerate() {
            let name = format!("block{i}");
            if i < last && !attention && !hooks.watches(&name) {
                hooks.layer(&name, &h)?; // the mark, for listings: nothing watches it
                h = block.forward(&h, hooks)?;
                continue;
            }
            let normed = hooks.token_layer(&name, &block.layernorm_before.forward(&h)?, (g, g))?;
            let residual = hooks.carry(&h)?;
            h = if attention {
                block.forward_from_norm_marked(&normed, &residual, hooks, g)?
            } else if i == last {
                block.forward_from_norm_cls(&normed, &residual, hooks)?
            } else {
                block.forward_from_norm(&normed, &residual, hooks)?
            };
        }
        self.layernorm.forward(&h.narrow(1, 0, 1)?.squeeze(1)?)
    }

    /// The features of a plain pass.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x, &Hooks::none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use tgc_explain::ReluMode;

    /// A block of random weights (non-trivial LayerNorm scales and shifts, biases).
    fn block(act: &str) -> Block {
        let cfg = VitConfig {
            hidden_size: 16,
            num_attention_heads: 4,
            intermediate_size: 40,
            layer_norm_eps: 1e-6,
            hidden_act: act.into(),
            ..VitConfig::vit_base_patch16_224()
        };
        let mut tensors = std::collections::HashMap::new();
        let mut put = |name: &str, shape: &[usize], mean: f64| {
            let t = (Tensor::randn(0f32, 0.3, shape, &Device::Cpu).unwrap() + mean).unwrap();
            tensors.insert(name.to_owned(), t);
        };
        for part in ["query", "key", "value"] {
            put(&format!("attention.attention.{part}.weight"), &[16, 16], 0.0);
            put(&format!("attention.attention.{part}.bias"), &[16], 0.0);
        }
        put("attention.output.dense.weight", &[16, 16], 0.0);
        put("attention.output.dense.bias", &[16], 0.0);
        for ln in ["layernorm_before", "layernorm_after"] {
            put(&format!("{ln}.weight"), &[16], 1.0);
            put(&format!("{ln}.bias"), &[16], 0.0);
        }
        put("intermediate.dense.weight", &[40, 16], 0.0);
        put("intermediate.dense.bias", &[40], 0.0);
        put("output.dense.weight", &[16, 40], 0.0);
        put("output.dense.bias", &[16], 0.0);
        let act = Activation::parse(act).unwrap();
        Block::new(&cfg, act, VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), false).unwrap()
    }

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn the_fused_block_gives_the_layers_values_and_input_gradient() {
        for act in ["gelu", "gelu_new"] {
            let block = block(act);
            assert!(block.fused.is_some());
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 7, 16), &Device::Cpu).unwrap()).unwrap();
            let weights = Tensor::randn(0f32, 1.0, (2, 7, 16), &Device::Cpu).unwrap();
            let fused = block.forward(x.as_tensor(), &Hooks::none()).unwrap();
            let layers = block.forward_from_norm(&block.layernorm_before.forward(x.as_tensor()).unwrap(), x.as_tensor(), &Hooks::none()).unwrap();
            assert!(max_abs(&fused, &layers) < 1e-6, "{act}: values differ by {}", max_abs(&fused, &layers));
            let grad = |y: &Tensor| y.mul(&weights).unwrap().sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap().clone();
            let (g_fused, g_layers) = (grad(&fused), grad(&layers));
            let scale: f32 = g_layers.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
            assert!(scale > 0.1, "{act}: a gradient to compare");
            assert!(max_abs(&g_fused, &g_layers) < 1e-5 * scale, "{act}: gradients differ by {}", max_abs(&g_fused, &g_layers));
        }
    }

    #[test]
    fn the_class_token_path_gives_the_full_blocks_class_token_and_gradient() {
        for act in ["gelu", "relu"] {
            let block = block(act);
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 7, 16), &Device::Cpu).unwrap()).unwrap();
            let weights = Tensor::randn(0f32, 1.0, (3, 1, 16), &Device::Cpu).unwrap();
            for mode in [ReluMode::Standard, ReluMode::Guided] {
                let hooks = || Hooks::none().with_relu_mode(mode);
                let full = block.forward(x.as_tensor(), &hooks()).unwrap().narrow(1, 0, 1).unwrap();
                let normed = block.layernorm_before.forward(x.as_tensor()).unwrap();
                let cls = block.forward_from_norm_cls(&normed, x.as_tensor(), &hooks()).unwrap();
                assert_eq!(cls.dims(), [3, 1, 16]);
                assert!(max_abs(&full, &cls) < 1e-5, "{act}: values differ by {}", max_abs(&full, &cls));
                let grad = |y: &Tensor| y.mul(&weights).unwrap().sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap().clone();
                let (g_full, g_cls) = (grad(&full), grad(&cls));
                let scale: f32 = g_full.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
                // Every token reaches the class token through the keys and values.
                let token_6: f32 = g_cls.narrow(1, 6, 1).unwrap().abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
                assert!(scale > 0.1 && token_6 > 1e-3, "{act}: gradients to compare");
                assert!(max_abs(&g_full, &g_cls) < 1e-5 * scale, "{act}: gradients differ by {}", max_abs(&g_full, &g_cls));
            }
        }
    }

    #[test]
    fn relu_blocks_keep_their_layers() {
        assert!(block("relu").fused.is_none());
    }
}
