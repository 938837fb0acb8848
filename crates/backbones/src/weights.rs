//! Where weights come from: the Hugging Face hub (through `hf-hub` and its cache), a local
//! folder laid out like a hub snapshot, a single `.safetensors` file, or `random:<seed>`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::Device;
use candle_nn::VarBuilder;
use sha2::{Digest, Sha256};

use crate::error::{BackboneError, Result};
use crate::random_init::{RandomInit, RANDOM_INIT_VERSION};
use tgc_kernels::ops::DTYPE;

/// One way to obtain a backbone's weights. Parsed from the command line's `--weights`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightSource {
    /// A hub repository, `org/name` or `org/name@revision` (default revision `main`).
    Hub { repo: String, revision: Option<String> },
    /// A folder holding `model.safetensors` and, for ViT, `config.json`.
    Folder(PathBuf),
    /// A single `.safetensors` file (ResNet needs no config).
    File(PathBuf),
    /// Seeded random initialisation; every output made with it says so.
    Random { seed: u64 },
}

impl FromStr for WeightSource {
    type Err = BackboneError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || BackboneError::BadSource(s.to_owned());
        if let Some(seed) = s.strip_prefix("random:") {
            return seed.parse().map(|seed| WeightSource::Random { seed }).map_err(|_| bad());
        }
        let path = Path::new(s);
        if path.is_dir() {
            return Ok(WeightSource::Folder(path.to_owned()));
        }
        if path.is_file() {
            return Ok(WeightSource::File(path.to_owned()));
        }
        let looks_like_path = s.starts_with('.') || s.starts_with('/') || s.ends_with(".safetensors");
        let (repo, revision) = match s.split_once('@') {
            Some((repo, rev)) if !rev.is_empty() => (repo, Some(rev.to_owned())),
            Some(_) => return Err(bad()),
            None => (s, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let valid_id = parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        if looks_like_path || !valid_id {
            return Err(BackboneError::Weights { source_name: s.to_owned(), message: "no such file or folder, and not a hub id (org/name[@revision])".into() });
        }
        Ok(WeightSource::Hub { repo: repo.to_owned(), revision })
    }
}

impl fmt::Display for WeightSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightSource::Hub { repo, revision: Some(rev) } => write!(f, "{repo}@{rev}"),
            WeightSource::Hub { repo, revision: None } => write!(f, "{repo}"),
            WeightSource::Folder(p) | WeightSource::File(p) => write!(f, "{}", p.display()),
            WeightSource::Random { seed } => write!(f, "random:{seed}"),
        }
    }
}

impl WeightSource {
    pub fn is_random(&self) -> bool {
        matches!(self, WeightSource::Random { .. })
    }
}

/// What identifies a set of weights in outputs and cache keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsIdentity {
    /// The source as the user gave it (`random:1`, `timm/resnet18.tv_in1k`, a path).
    pub source: String,
    /// SHA-256 of the weight file's bytes (for random weights, of the source string and the
    /// initialisation scheme's version).
    pub digest: String,
    pub random: bool,
}

/// Weights ready to build a model from.
pub struct LoadedWeights {
    pub vb: VarBuilder<'static>,
    /// `config.json` beside the weights, when there is one.
    pub config: Option<PathBuf>,
    pub identity: WeightsIdentity,
}

/// The hub cache: `HF_HUB_CACHE` if set, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache() -> hf_hub::Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => hf_hub::Cache::new(PathBuf::from(dir)),
        None => hf_hub::Cache::from_env(),
    }
}

/// Resolves a source to weight tensors. Hub files come from the cache when present (no
/// network needed) and are downloaded into it otherwise.
pub fn load_weights(source: &WeightSource, device: &Device) -> Result<LoadedWeights> {
    let name = source.to_string();
    let weights_err = |message: String| BackboneError::Weights { source_name: name.clone(), message };
    let (model, config) = match source {
        WeightSource::Random { seed } => {
            let vb = VarBuilder::from_backend(Box::new(RandomInit { seed: *seed }), DTYPE, device.clone());
            let digest = sha256_hex(format!("{name}|{RANDOM_INIT_VERSION}").as_bytes());
            let identity = WeightsIdentity { source: name.clone(), digest, random: true };
            return Ok(LoadedWeights { vb, config: None, identity });
        }
        WeightSource::File(path) => (path.clone(), None),
        WeightSource::Folder(dir) => {
            let model = dir.join("model.safetensors");
            if !model.is_file() {
                return Err(weights_err(format!("{} not found", model.display())));
            }
            let config = dir.join("config.json");
            (model, config.is_file().then_some(config))
        }
        WeightSource::Hub { repo, revision } => {
            let api = hf_hub::api::sync::ApiBuilder::from_cache(hub_cache())
                .with_progress(true)
                .build()
                .map_err(|e| weights_err(format!("cannot set up the hub client: {e}")))?;
            let rev = revision.clone().unwrap_or_else(|| "main".to_owned());
            let hub_repo = api.repo(hf_hub::Repo::with_revision(repo.clone(), hf_hub::RepoType::Model, rev));
            let model = hub_repo
                .get("model.safetensors")
                .map_err(|e| weights_err(format!("model.safetensors is neither in the hub cache ({}) nor downloadable: {e}", hub_cache().path().display())))?;
            (model, hub_repo.get("config.json").ok())
        }
    };
    let bytes = std::fs::read(&model).map_err(|e| weights_err(format!("cannot read {}: {e}", model.display())))?;
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| weights_err(format!("{} is not a valid safetensors file: {e}", model.display())))?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for key in names {
        if let Some((count, first)) = tgc_explain::non_finite(&tensors[key]).map_err(|e| weights_err(e.to_string()))? {
            return Err(weights_err(format!("{}: tensor `{key}` holds {count} NaN or infinite value(s), first at flat index {first}", model.display())));
        }
    }
    tracing::debug!(source = %name, file = %model.display(), tensors = tensors.len(), "weights loaded");
    let identity = WeightsIdentity { source: name, digest: sha256_hex(&bytes), random: false };
    Ok(LoadedWeights { vb: VarBuilder::from_tensors(tensors, DTYPE, device), config, identity })
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
