//! The faithfulness protocol of `tgc faithfulness` as a library: explain a batch of slices with
//! every method and measure each map ([`evaluate`]), then, for each stage of a model-parameter
//! randomisation, compare the maps of the changed model with the trained model's
//! ([`compare_maps`]). Callers build the models (a randomised head, re-drawn backbone stages)
//! and write the rows.

use candle_core::Tensor;

use super::curves::{deletion_insertion_many, CurveConfig};
use super::infidelity::{infidelity, InfidelityConfig};
use super::maps::{above_noise, complexity, energy_in_mask, pointing_hit, sparseness, spearman, ssim};
use super::road::{road, RoadConfig};
use super::sensitivity::{sensitivity_max, SensitivityConfig};
use crate::attribute::{Attribute, Attribution, Method};
use crate::error::{ExplainError, Result};
use crate::model::Model;
use crate::normalize::normalized_magnitude;

/// What [`evaluate`] measures beside the deletion and insertion curves; `None` skips a measure.
#[derive(Debug, Clone)]
pub struct Protocol {
    /// Deletion/insertion curves.
    pub curve: CurveConfig,
    /// ROAD (most and least relevant first).
    pub road: Option<RoadConfig>,
    /// Captum's infidelity; `multiply_by_inputs` is set per method
    /// ([`Attribute::multiplies_by_inputs`]).
    pub infidelity: Option<InfidelityConfig>,
    /// Captum's max-sensitivity.
    pub sensitivity: Option<SensitivityConfig>,
}

/// One map's measures (one slice, one method).
#[derive(Debug, Clone, PartialEq)]
pub struct Measures {
    /// Area under the deletion curve (lower: the map finds what the model uses).
    pub deletion: f32,
    /// Area under the insertion curve (higher is better).
    pub insertion: f32,
    /// ROAD: mean target probability with the most relevant pixels removed.
    pub road_morf: Option<f64>,
    /// ROAD: the same, least relevant removed first.
    pub road_lerf: Option<f64>,
    /// Gini index of the map's magnitudes.
    pub sparseness: Option<f64>,
    /// Entropy of the normalised magnitudes.
    pub complexity: Option<f64>,
    /// Captum's infidelity.
    pub infidelity: Option<f64>,
    /// Captum's max-sensitivity.
    pub sensitivity: Option<f64>,
    /// Share of the map's energy inside the slice's known region (when it has a mask).
    pub energy: Option<f64>,
    /// Whether the map's maximum lies inside the known region (when it has a mask).
    pub hit: Option<bool>,
}

/// A batch explained and measured.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Every method's result on the batch, in the order of the methods.
    pub attributions: Vec<Attribution>,
    /// Per slice, per method: the normalised map (Captum's absolute value, 2 % outliers)
    /// that [`compare_maps`] compares with.
    pub maps: Vec<Vec<Vec<f32>>>,
    /// Per slice, per method: its measures.
    pub measures: Vec<Vec<Measures>>,
}

/// One changed model's map compared with the trained model's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Spearman rank correlation of the normalised maps.
    pub spearman: Option<f64>,
    /// SSIM of the normalised maps.
    pub ssim: Option<f64>,
}

/// Explains the slices `input` `[B, C, H, W]` (one target each) with every method (sharing
/// passes, [`Method::attribute_all`]) and measures every map; `masks` gives each slice's known
/// region (`H·W` values in {0, 1}) where there is one.
pub fn evaluate(
    model: &dyn Model,
    methods: &[Method],
    input: &Tensor,
    targets: &[usize],
    masks: &[Option<Vec<f32>>],
    protocol: &Protocol,
) -> Result<Evaluation> {
    let b = input.dim(0)?;
    if masks.len() != b || targets.len() != b {
        return Err(ExplainError::Invalid(format!("{b} slices with {} targets and {} masks", targets.len(), masks.len())));
    }
    let attributions = Method::attribute_all(methods, model, input, targets)?;
    // Per method, per slice: infidelity and sensitivity, computed on the whole batch.
    let mut robust = Vec::with_capacity(methods.len());
    for (method, a) in methods.iter().zip(&attributions) {
        let infid = match &protocol.infidelity {
            Some(config) => {
                let config = InfidelityConfig { multiply_by_inputs: method.multiplies_by_inputs(), ..config.clone() };
                infidelity(model, input, &a.attribution, targets, &config)?.into_iter().map(Some).collect()
            }
            None => vec![None; b],
        };
        let sens = match &protocol.sensitivity {
            Some(config) => sensitivity_max(method, model, input, targets, Some(&a.attribution), config)?.into_iter().map(Some).collect(),
            None => vec![None; b],
        };
        robust.push((infid, sens));
    }
    let (mut maps, mut measures) = (Vec::with_capacity(b), Vec::with_capacity(b));
    for (j, &target) in targets.iter().enumerate() {
        let x = input.narrow(0, j, 1)?;
        let mut slice_maps = Vec::with_capacity(methods.len());
        let mut raws = Vec::with_capacity(methods.len());
        for a in &attributions {
            let one = a.attribution.get(j)?;
            slice_maps.push(comparison_map(&one)?);
            raws.push(one.abs()?.sum(0)?.flatten_all()?.to_vec1::<f32>()?);
        }
        let importances: Vec<&[f32]> = raws.iter().map(Vec::as_slice).collect();
        let curves = deletion_insertion_many(model, &x, &importances, target, &protocol.curve)?;
        let mut slice_measures = Vec::with_capacity(methods.len());
        for ((raw, curves), (infid, sens)) in raws.iter().zip(curves).zip(&robust) {
            let road = protocol.road.as_ref().map(|config| road(model, &x, raw, target, config)).transpose()?;
            slice_measures.push(Measures {
                deletion: curves.deletion_auc(),
                insertion: curves.insertion_auc(),
                road_morf: road.as_ref().map(|r| r.morf_mean() as f64),
                road_lerf: road.as_ref().map(|r| r.lerf_mean() as f64),
                sparseness: sparseness(raw),
                complexity: complexity(raw),
                infidelity: infid[j],
                sensitivity: sens[j],
                energy: masks[j].as_ref().and_then(|m| energy_in_mask(raw, m)),
                hit: masks[j].as_ref().map(|m| pointing_hit(raw, m)),
            });
        }
        maps.push(slice_maps);
        measures.push(slice_measures);
    }
    Ok(Evaluation { attributions, maps, measures })
}

/// Explains the slices `input` `[B, C, H, W]` with every method on a changed `model` and
/// compares each normalised map with `trained[slice][method]` (an [`Evaluation`]'s `maps`):
/// per slice, per method.
pub fn compare_maps(model: &dyn Model, methods: &[Method], input: &Tensor, targets: &[usize], trained: &[Vec<Vec<f32>>]) -> Result<Vec<Vec<Similarity>>> {
    let (_, _, h, w) = input.dims4()?;
    let results = Method::attribute_all(methods, model, input, targets)?;
    let mut out = Vec::with_capacity(trained.len());
    for (j, maps) in trained.iter().enumerate() {
        let mut row = Vec::with_capacity(methods.len());
        for (map, a) in maps.iter().zip(&results) {
            let other = comparison_map(&a.attribution.get(j)?)?;
            row.push(Similarity { spearman: spearman(map, &other), ssim: ssim(map, &other, h, w) });
        }
        out.push(row);
    }
    Ok(out)
}

/// One slice's map as the randomisation check compares it: its noise-level values zero (at the
/// attribution's own scale, [`above_noise`]), then normalised as Captum shows it.
fn comparison_map(attribution: &Tensor) -> Result<Vec<f32>> {
    let values = above_noise(&attribution.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?);
    Ok(normalized_magnitude(&Tensor::from_vec(values, attribution.shape(), attribution.device())?)?.0)
}
