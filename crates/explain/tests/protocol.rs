//! The faithfulness protocol as a library: its measures are the measures run one by one, and a
//! model compared with itself gives identical maps.

mod common;

use common::{pseudo, Toy};
use tgc_explain::faithfulness::{compare_maps, complexity, deletion_insertion, evaluate, road, sparseness, CurveConfig, Protocol, RoadConfig};
use tgc_explain::{GradCam, Method, Saliency};

#[test]
fn the_protocol_measures_each_map_as_the_measures_do_alone() {
    let model = Toy::new(4, true);
    let x = (pseudo(&[2, 1, 8, 8], 5) + 0.5).unwrap();
    let targets = [1, 0];
    let methods = [Method::new(Saliency), Method::new(GradCam::default())];
    let mut mask = vec![0f32; 64];
    mask[..16].iter_mut().for_each(|m| *m = 1.0);
    let protocol =
        Protocol { curve: CurveConfig { steps: 4, ..CurveConfig::default() }, road: Some(RoadConfig::default()), infidelity: None, sensitivity: None };
    let out = evaluate(&model, &methods, &x, &targets, &[Some(mask), None], &protocol).unwrap();
    assert_eq!((out.maps.len(), out.measures.len(), out.measures[0].len()), (2, 2, 2));
    for (j, &t) in targets.iter().enumerate() {
        let one = x.narrow(0, j, 1).unwrap();
        for (m, method) in methods.iter().enumerate() {
            let a = method.attribute(&model, &one, &[t]).unwrap().attribution.get(0).unwrap();
            let raw: Vec<f32> = a.abs().unwrap().sum(0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let measures = &out.measures[j][m];
            let curves = deletion_insertion(&model, &one, &raw, t, &protocol.curve).unwrap();
            assert_eq!((measures.deletion, measures.insertion), (curves.deletion_auc(), curves.insertion_auc()), "slice {j}, method {m}");
            let r = road(&model, &one, &raw, t, protocol.road.as_ref().unwrap()).unwrap();
            assert_eq!(measures.road_morf, Some(r.morf_mean() as f64));
            assert_eq!((measures.sparseness, measures.complexity), (sparseness(&raw), complexity(&raw)));
            assert_eq!(measures.energy.is_some(), j == 0, "only the first slice has a mask");
            assert_eq!(measures.infidelity, None);
        }
    }
    // The trained model against itself: every map the same.
    let same = compare_maps(&model, &methods, &x, &targets, &out.maps).unwrap();
    assert!(same.iter().flatten().all(|s| s.spearman.unwrap() > 1.0 - 1e-9), "{same:?}");
}
