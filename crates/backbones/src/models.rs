//! Default model choices, kept as data in `models/backbones.json` at the workspace root and
//! compiled in.

use serde::Deserialize;

use crate::backbone::BackboneKind;

const BACKBONES_JSON: &str = include_str!("../../../models/backbones.json");

#[derive(Deserialize)]
struct Entry {
    hub_id: String,
}

#[derive(Deserialize)]
struct Defaults {
    resnet18: Entry,
    vit: Entry,
}

/// The default hub id of a backbone.
pub fn default_hub_id(kind: BackboneKind) -> &'static str {
    static DEFAULTS: std::sync::OnceLock<Defaults> = std::sync::OnceLock::new();
    // The file is part of the source tree; a test checks that it parses.
    let d = DEFAULTS.get_or_init(|| serde_json::from_str(BACKBONES_JSON).expect("models/backbones.json parses"));
    match kind {
        BackboneKind::ResNet18 => &d.resnet18.hub_id,
        BackboneKind::Vit => &d.vit.hub_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_study_checkpoints() {
        assert_eq!(default_hub_id(BackboneKind::ResNet18), "timm/resnet18.tv_in1k");
        assert_eq!(default_hub_id(BackboneKind::Vit), "google/vit-base-patch16-224");
    }
}
