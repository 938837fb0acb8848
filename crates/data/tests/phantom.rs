use tgc_data::phantom::{generate, is_phantom, mask_path, PhantomConfig};
use tgc_data::{read_nifti, Dataset, Label, Stats};

fn config(patients: usize, seed: u64) -> PhantomConfig {
    PhantomConfig { patients, seed, size: 48, max_visits: 3, ..Default::default() }
}

#[test]
fn phantoms_load_as_a_data_set_with_masks() {
    let dir = tempfile::tempdir().unwrap();
    let images = generate(dir.path(), &config(8, 1)).unwrap();
    assert!(is_phantom(dir.path()));
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.len(), images.len());
    let stats = Stats::of(&ds);
    assert_eq!((stats.disease.patients, stats.healthy.patients), (4, 4));
    assert!(stats.max_visits() <= 3);
    for record in ds.records() {
        let image = read_nifti(&record.path).unwrap();
        assert_eq!((image.height(), image.width()), (48, 48));
        assert!(image.pixels().iter().all(|v| (0.0..=1.0).contains(v)));
        let mask = read_nifti(&mask_path(dir.path(), record.label, &record.path)).unwrap();
        assert!(mask.pixels().iter().all(|&v| v == 0.0 || v == 1.0));
        // The mask is the dark ventricles: their mean intensity is far below the tissue's.
        let (mut inside, mut n) = (0.0, 0);
        for (v, m) in image.pixels().iter().zip(mask.pixels()) {
            if *m == 1.0 {
                inside += v;
                n += 1;
            }
        }
        assert!(n > 0 && inside / (n as f32) < 0.2, "mask mean {}", inside / n as f32);
    }
}

#[test]
fn disease_ventricles_are_larger_and_grow_with_day() {
    let dir = tempfile::tempdir().unwrap();
    let images = generate(dir.path(), &config(12, 5)).unwrap();
    let area = |i: &tgc_data::phantom::PhantomImage| read_nifti(&i.mask_path).unwrap().pixels().iter().filter(|&&v| v == 1.0).count();
    let mean = |label| {
        let areas: Vec<usize> = images.iter().filter(|i| i.label == label).map(area).collect();
        areas.iter().sum::<usize>() as f64 / areas.len() as f64
    };
    assert!(mean(Label::Disease) > 1.3 * mean(Label::Healthy));
    for pair in images.windows(2) {
        if pair[0].patient == pair[1].patient && pair[0].label == Label::Disease {
            assert!(pair[1].day > pair[0].day);
            assert!(area(&pair[1]) >= area(&pair[0]));
        }
    }
}

#[test]
fn generation_is_deterministic_per_seed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ia = generate(a.path(), &config(4, 9)).unwrap();
    let ib = generate(b.path(), &config(4, 9)).unwrap();
    assert_eq!(ia.len(), ib.len());
    for (x, y) in ia.iter().zip(&ib) {
        assert_eq!(read_nifti(&x.path).unwrap(), read_nifti(&y.path).unwrap());
    }
}

#[test]
fn too_few_patients_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(generate(dir.path(), &config(3, 0)).is_err());
}
