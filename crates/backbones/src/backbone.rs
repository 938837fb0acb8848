//! One type over both backbones: load from a [`WeightSource`], preprocess, compute features,
//! and the forward pass with the explainers' marks.

use std::fmt;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use tgc_data::Image;

use crate::error::{BackboneError, Result};
use crate::layers::Ops;
use tgc_explain::Hooks;

use crate::preprocess::Preprocess;
use crate::resnet::ResNet18;
use crate::vit::{Vit, VitConfig};
use crate::weights::{load_weights, WeightSource, WeightsIdentity};

/// The two backbones of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackboneKind {
    ResNet18,
    Vit,
}

impl FromStr for BackboneKind {
    type Err = BackboneError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "resnet18" | "resnet" => Ok(Self::ResNet18),
            "vit" => Ok(Self::Vit),
            other => Err(BackboneError::UnknownBackbone(other.to_owned())),
        }
    }
}

impl fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl BackboneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResNet18 => "resnet18",
            Self::Vit => "vit",
        }
    }

    /// The study's name for the model (`ResNet`, `ViT`), used in result tables.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::ResNet18 => "ResNet",
            Self::Vit => "ViT",
        }
    }

    /// The default hub id: the study's checkpoints, listed with notes in
    /// `models/backbones.json` at the workspace root (a test keeps the two equal; the crate
    /// does not read outside its own folder, so it builds and packages on its own).
    pub fn default_weights(self) -> &'static str {
        match self {
            Self::ResNet18 => "timm/resnet18.tv_in1k",
            Self::Vit => "google/vit-base-patch16-224",
        }
    }
}

/// Options of [`Backbone::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// ImageNet normalization of the input (off in the study).
    pub imagenet_normalize: bool,
    /// Re-draw the weights under these checkpoint prefixes at random (the randomisation test).
    pub randomize: Option<Randomize>,
    /// Which implementation runs the layers: the CPU kernels on the CPU and the device-generic
    /// ops elsewhere ([`Ops::Auto`]), or the device-generic ops everywhere.
    pub ops: Ops,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, imagenet_normalize: false, randomize: None, ops: Ops::Auto }
    }
}

/// Which weights to re-randomise: tensors under `prefixes` (`layer4`, `encoder.layer.11`,
/// `embeddings`, …), drawn as `random:<seed>` would draw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Randomize {
    pub prefixes: Vec<String>,
    pub seed: u64,
}

#[derive(Debug, Clone)]
enum Net {
    ResNet(ResNet18),
    Vit(Vit),
}

/// A frozen backbone in eval mode.
#[derive(Debug, Clone)]
pub struct Backbone {
    kind: BackboneKind,
    net: Net,
    generic: bool,
    preprocess: Preprocess,
    identity: WeightsIdentity,
    device: Device,
}

impl Backbone {
    pub fn load(kind: BackboneKind, source: &WeightSource, options: &LoadOptions) -> Result<Self> {
        let mut weights = load_weights(source, &options.device)?;
        if let Some(r) = &options.randomize {
            let backend = crate::random_init::PartialRandom {
                inner: weights.vb.clone(),
                random: crate::random_init::RandomInit { seed: r.seed },
                prefixes: r.prefixes.clone(),
            };
            weights.vb = candle_nn::VarBuilder::from_backend(Box::new(backend), weights.vb.dtype(), options.device.clone());
            weights.identity.digest = crate::weights::sha256_hex(format!("{}|randomized {:?} seed {}", weights.identity.digest, r.prefixes, r.seed).as_bytes());
        }
        let source_name = source.to_string();
        let key_err = |e: candle_core::Error| BackboneError::Weights { source_name: source_name.clone(), message: e.to_string() };
        let (net, resize) = match kind {
            BackboneKind::ResNet18 => (Net::ResNet(ResNet18::with_ops(weights.vb, options.ops).map_err(key_err)?), None),
            BackboneKind::Vit => {
                let config = match (&weights.config, source) {
                    (Some(path), _) => VitConfig::from_file(path)?,
                    (None, WeightSource::Random { .. }) => VitConfig::vit_base_patch16_224(),
                    (None, _) => return Err(BackboneError::Weights { source_name, message: "ViT weights need a config.json beside model.safetensors".into() }),
                };
                let size = config.image_size;
                (Net::Vit(Vit::with_ops(&config, weights.vb, options.ops).map_err(key_err)?), Some(size))
            }
        };
        let preprocess = Preprocess { resize_shorter_to: resize, imagenet_normalize: options.imagenet_normalize };
        if weights.identity.random {
            tracing::warn!(backbone = %kind, source = %source, "RANDOM-INIT backbone weights: outputs are not those of a pretrained model");
        }
        let generic = options.ops.generic_on(&options.device);
        Ok(Self { kind, net, generic, preprocess, identity: weights.identity, device: options.device.clone() })
    }

    /// A layer's name as the model marks it, for the layer methods: ResNet-18's stages are the
    /// checkpoint's `layer1` … `layer4`; a ViT block is `block<N>`, and the checkpoint's
    /// `encoder.layer.<N>` is accepted as its alias (the layer is the output of that block's
    /// `layernorm_before`). Anything else — a bare number, a layer the model lacks — is an error
    /// that names the layers there are.
    pub fn layer(&self, name: &str) -> Result<String> {
        let canonical = match &self.net {
            Net::ResNet(_) => name.to_owned(),
            Net::Vit(_) => name.strip_prefix("encoder.layer.").filter(|n| n.parse::<usize>().is_ok()).map_or_else(|| name.to_owned(), |n| format!("block{n}")),
        };
        let names = self.layer_names();
        if names.contains(&canonical) {
            return Ok(canonical);
        }
        let alias = match &self.net {
            Net::ResNet(_) => String::new(),
            Net::Vit(_) => format!(", or encoder.layer.0..encoder.layer.{}", names.len() - 1),
        };
        Err(BackboneError::UnknownLayer(format!("`{name}`: {} has {}..{}{alias}", self.kind, names[0], names[names.len() - 1])))
    }

    /// The last layer (`layer4`, or the last block): the layer methods' default, as in the study.
    pub fn last_layer(&self) -> String {
        self.name_of(self.layer_count() - 1)
    }

    fn layer_count(&self) -> usize {
        match &self.net {
            Net::ResNet(_) => ResNet18::STAGES,
            Net::Vit(v) => v.blocks(),
        }
    }

    /// Every layer the layer methods can explain, in forward order: `layer1`…`layer4`, or
    /// `block0`… .
    pub fn layer_names(&self) -> Vec<String> {
        (0..self.layer_count()).map(|i| self.name_of(i)).collect()
    }

    fn name_of(&self, index: usize) -> String {
        match &self.net {
            Net::ResNet(_) => format!("layer{}", index + 1),
            Net::Vit(_) => format!("block{index}"),
        }
    }

    /// The randomisation cascade (Adebayo et al.): checkpoint prefixes re-randomised at each
    /// stage after the head, from the top down, cumulatively. ResNet-18: `layer4`, then
    /// `layer3`, `layer2`, `layer1`, the stem; ViT: the last block, then down to about ¾, ½, ¼
    /// of the depth and block 0, then the embeddings. Stage `k` randomises `stages[..=k]`.
    pub fn randomization_cascade(&self) -> Vec<(String, Vec<String>)> {
        match &self.net {
            Net::ResNet(_) => ["layer4", "layer3", "layer2", "layer1"]
                .iter()
                .map(|l| (l.to_string(), vec![l.to_string()]))
                .chain(std::iter::once(("stem".to_owned(), vec!["conv1".to_owned(), "bn1".to_owned()])))
                .collect(),
            Net::Vit(v) => {
                let l = v.blocks();
                let mut cuts: Vec<usize> = vec![l - 1, 3 * l / 4, l / 2, l / 4, 0];
                cuts.dedup();
                let mut stages = Vec::new();
                let mut next = l;
                for cut in cuts {
                    if cut >= next {
                        continue;
                    }
                    let mut blocks: Vec<String> = (cut..next).rev().map(|b| format!("encoder.layer.{b}")).collect();
                    if next == l {
                        blocks.push("layernorm".to_owned()); // the final norm sits above the last block
                    }
                    stages.push((if cut + 1 == next { format!("block{cut}") } else { format!("blocks{cut}-{}", next - 1) }, blocks));
                    next = cut;
                }
                stages.push(("embeddings".to_owned(), vec!["embeddings".to_owned()]));
                stages
            }
        }
    }

    pub fn kind(&self) -> BackboneKind {
        self.kind
    }

    pub fn identity(&self) -> &WeightsIdentity {
        &self.identity
    }

    pub fn is_random(&self) -> bool {
        self.identity.random
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the layers run the device-generic ops ([`Ops`]) rather than the CPU kernels.
    pub fn runs_generic_ops(&self) -> bool {
        self.generic
    }

    /// Which ops run where, for outputs' metadata: `cpu kernels`, `generic ops on cuda:0`, ….
    pub fn ops_description(&self) -> String {
        if !self.generic {
            return "cpu kernels".into();
        }
        format!("generic ops on {}", crate::layers::device_name(&self.device))
    }

    pub fn preprocess_settings(&self) -> Preprocess {
        self.preprocess
    }

    pub fn feature_dim(&self) -> usize {
        match &self.net {
            Net::ResNet(_) => ResNet18::FEATURE_DIM,
            Net::Vit(v) => v.config().hidden_size,
        }
    }

    /// One slice as this backbone's input `[3, H, W]`.
    pub fn preprocess(&self, image: &Image) -> Result<Tensor> {
        self.preprocess.apply(image, &self.device)
    }

    /// A batch of slices as `[B, 3, H, W]`.
    pub fn preprocess_batch(&self, images: &[Image]) -> Result<Tensor> {
        let inputs = images.iter().map(|i| self.preprocess(i)).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&inputs, 0)?)
    }

    /// Penultimate features `[B, D]` of a preprocessed batch.
    pub fn features(&self, input: &Tensor) -> Result<Tensor> {
        self.forward(input, &Hooks::none())
    }

    /// Penultimate features `[B, D]`, the pass marking its layers (`layer1`…`layer4`, or
    /// `block0`…), ReLUs and attention in `hooks` for the explainers.
    pub fn forward(&self, input: &Tensor, hooks: &Hooks) -> Result<Tensor> {
        check_input(input)?;
        Ok(match &self.net {
            Net::ResNet(r) => r.forward(input, hooks)?,
            Net::Vit(v) => v.forward(input, hooks)?,
        })
    }
}

fn check_input(input: &Tensor) -> Result<()> {
    match input.dims() {
        [_, 3, _, _] => Ok(()),
        dims => Err(BackboneError::Shape { got: dims.to_vec(), expected: "[batch, 3, height, width]".into() }),
    }
}
