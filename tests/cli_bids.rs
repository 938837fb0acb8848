//! `tgc` on a BIDS cohort: `data stats` reports what was skipped and why, a missing `--labels`
//! or `--slice` is a clear error with a non-zero exit, `extract` records the slice, and the 3-D
//! model explains every chosen scan into a BIDS derivative whose maps have the scans' geometry.

mod common;

use common::{ok, text, tgc};

#[test]
fn a_bids_cohort_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let data = dir.path().join("cohort");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    ok(tgc(&["data", "synth", "--layout", "bids", "--out", &s(&data), "--patients", "6", "--size", "32", "--max-visits", "3", "--seed", "4"], &cache));

    let stats = ok(tgc(&["data", "stats", "--data", &s(&data), "--labels", "sessions:diagnosis=AD/CN", "--slice", "axial:mid"], &cache));
    for needle in [
        "layout: bids, slice axial:mid",
        "image sizes: 32x32",
        "days from session labels",
        "1  no T1w image",
        "is n/a in sessions.tsv",
        "runs left out",
        "visit-count confound",
    ] {
        assert!(stats.contains(needle), "stats lacks {needle}:\n{stats}");
    }
    // Without --slice, stats validates the scans themselves and names their voxel orders.
    let scans = ok(tgc(&["data", "stats", "--data", &s(&data), "--labels", "participants:group=patient/control"], &cache));
    assert!(scans.contains("32x32x16 (RAS)") && scans.contains("(PIR)") && scans.contains("(LPS)"), "{scans}");

    // Clear errors, non-zero exits, no output file.
    let features = dir.path().join("f.safetensors");
    let extract = |source: &[&str]| {
        let mut args =
            vec!["extract", "--backbone", "resnet18", "--weights", "random:1", "--out", features.to_str().unwrap(), "--data", data.to_str().unwrap()];
        args.extend(source);
        tgc(&args, &cache)
    };
    let o = extract(&["--slice", "axial:mid"]);
    assert!(!o.status.success() && text(&o).contains("--labels"), "{}", text(&o));
    let o = extract(&["--labels", "sessions:diagnosis=AD/CN"]);
    assert!(!o.status.success() && text(&o).contains("--slice"), "{}", text(&o));
    assert!(!features.exists());

    // One scan explained alone (`--input` with `--slice`): the map also in the scan's geometry.
    ok(extract(&["--labels", "sessions:diagnosis=AD/CN", "--slice", "axial:mid"]));
    let runs = dir.path().join("runs");
    ok(tgc(&["train", "--features", features.to_str().unwrap(), "--out", runs.to_str().unwrap(), "--iterations", "1", "--epochs", "2"], &cache));
    let scan = std::fs::read_dir(data.join("sub-OAS30002")).unwrap().flatten().find(|e| e.path().join("anat").is_dir()).unwrap().path().join("anat");
    let scan = std::fs::read_dir(scan).unwrap().flatten().next().unwrap().path();
    let one = dir.path().join("one.safetensors");
    ok(tgc(
        &[
            "explain",
            "--run",
            runs.join("ResNet/0").to_str().unwrap(),
            "--input",
            scan.to_str().unwrap(),
            "--slice",
            "axial:mid",
            "--method",
            "gradcam",
            "--out",
            one.to_str().unwrap(),
        ],
        &cache,
    ));
    assert!(one.is_file());
    assert_eq!(tgc_data::read_scan(&one.with_extension("nii.gz")).unwrap().geometry, tgc_data::read_scan(&scan).unwrap().geometry);
    let o = tgc(&["data", "stats", "--data", &s(&data), "--labels", "sessions:dx=AD/CN"], &cache);
    assert!(!o.status.success() && text(&o).contains("no such column") && text(&o).contains("_sessions.tsv"), "{}", text(&o));
    let o = tgc(&["data", "stats", "--data", &s(&data), "--labels", "sessions:diagnosis=AD/CN", "--slice", "oblique:3"], &cache);
    assert!(!o.status.success() && text(&o).contains("axial|coronal|sagittal"), "{}", text(&o));

    // The 3-D model over the cohort: a derivative, maps in each scan's own geometry.
    let out = dir.path().join("maps");
    ok(tgc(
        &[
            "explain",
            "--data",
            &s(&data),
            "--labels",
            "sessions:diagnosis=AD/CN",
            "--volume-weights",
            "random:3",
            "--method",
            "gradcam",
            "--split",
            "all",
            "--samples-per-class",
            "1",
            "--out",
            &s(&out),
        ],
        &cache,
    ));
    let description = std::fs::read_to_string(out.join("dataset_description.json")).unwrap();
    assert!(description.contains("\"DatasetType\": \"derivative\"") && description.contains("\"Name\": \"tgc\""), "{description}");
    // The healthy subject shown first is OAS30002, stored PIR (32 × 16 × 32 voxels).
    let maps: Vec<_> = std::fs::read_dir(out.join("sub-OAS30002"))
        .unwrap()
        .flatten()
        .flat_map(|ses| std::fs::read_dir(ses.path().join("anat")).unwrap().flatten())
        .map(|e| e.path())
        .collect();
    let nifti = maps.iter().find(|p| p.to_string_lossy().ends_with("_desc-gradcam_attribution.nii.gz")).expect("a NIfTI map");
    let scan = data.join(nifti.strip_prefix(&out).unwrap().to_string_lossy().replace("_desc-gradcam_attribution", "_T1w"));
    assert_eq!(tgc_data::read_scan(nifti).unwrap().geometry, tgc_data::read_scan(&scan).unwrap().geometry);
}
