//! BIDS cohorts: a tree written here by hand (the `nifti` crate's writer with our own affines,
//! not tgc's), OASIS-3-style visit tables, Clinica-style sessions.tsv, several runs, three voxel
//! orders of the same anatomy; every bad table, label and layout case names its error; fuzzed
//! trees never panic.

use std::path::{Path, PathBuf};

use ndarray::{Array3, ShapeBuilder};
use nifti::writer::WriterOptions;
use nifti::NiftiHeader;
use proptest::prelude::*;
use tgc_data::{Dataset, DaySource, Label, Layout, PatientId, SourceOptions};

/// The anatomy every scan holds, in RAS+ order: value at (x, y, z).
fn anatomy(x: usize, y: usize, z: usize) -> f32 {
    (x * 100 + y * 10 + z) as f32
}
const EXT: [usize; 3] = [6, 5, 4];

/// Writes the anatomy stored in the voxel order `codes` (`RAS`, `LPS`, `PIR`), with an sform
/// saying so, directly through the nifti crate.
fn write_scan(path: &Path, codes: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(path);
    // For each voxel axis: (world axis, runs against it).
    let axes: Vec<(usize, bool)> = codes
        .chars()
        .map(|c| match c {
            'R' => (0, false),
            'L' => (0, true),
            'A' => (1, false),
            'P' => (1, true),
            'S' => (2, false),
            'I' => (2, true),
            _ => unreachable!(),
        })
        .collect();
    let dims: Vec<usize> = axes.iter().map(|&(w, _)| EXT[w]).collect();
    let data = Array3::from_shape_fn((dims[0], dims[1], dims[2]).f(), |(i, j, k)| {
        let mut world = [0usize; 3];
        for (v, &(w, flip)) in axes.iter().enumerate() {
            let idx = [i, j, k][v];
            world[w] = if flip { EXT[w] - 1 - idx } else { idx };
        }
        anatomy(world[0], world[1], world[2])
    });
    let mut rows = [[0f32; 4]; 3];
    for (v, &(w, flip)) in axes.iter().enumerate() {
        rows[w][v] = if flip { -1.0 } else { 1.0 };
        rows[w][3] = if flip { EXT[w] as f32 - 1.0 } else { 0.0 };
    }
    let header = NiftiHeader { sform_code: 2, qform_code: 0, srow_x: rows[0], srow_y: rows[1], srow_z: rows[2], pixdim: [1.0; 8], ..NiftiHeader::default() };
    WriterOptions::new(path).reference_header(&header).write_nifti(&data).unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn anat(root: &Path, sub: &str, ses: &str, name: &str) -> PathBuf {
    root.join(format!("sub-{sub}")).join(format!("ses-{ses}")).join("anat").join(name)
}

/// An OASIS-3-style tree: three subjects, three voxel orders, two runs, a session without
/// anat/, files that are not T1w, a derivatives folder; visits in an OASIS clinical CSV.
fn oasis3_tree(root: &Path) {
    write(&root.join("dataset_description.json"), r#"{"Name": "hand-made", "BIDSVersion": "1.9.0"}"#);
    write_scan(&anat(root, "OAS30001", "d0000", "sub-OAS30001_ses-d0000_T1w.nii.gz"), "RAS");
    write_scan(&anat(root, "OAS30001", "d0400", "sub-OAS30001_ses-d0400_run-02_T1w.nii.gz"), "RAS");
    write_scan(&anat(root, "OAS30001", "d0400", "sub-OAS30001_ses-d0400_run-01_T1w.nii.gz"), "LPS");
    write_scan(&anat(root, "OAS30001", "d0400", "sub-OAS30001_ses-d0400_T2w.nii.gz"), "RAS");
    write(&anat(root, "OAS30001", "d0400", "sub-OAS30001_ses-d0400_run-01_T1w.json"), "{}");
    write(&anat(root, "OAS30001", "d0400", ".sub-OAS30001_ses-d0400_T1w.nii.gz"), "junk");
    write_scan(&anat(root, "OAS30002", "d0100", "sub-OAS30002_ses-d0100_T1w.nii"), "LPS");
    write_scan(&anat(root, "OAS30003", "d0050", "sub-OAS30003_ses-d0050_T1w.nii.gz"), "PIR");
    write(&root.join("sub-OAS30003/ses-d0900/func/sub-OAS30003_ses-d0900_task-rest_bold.json"), "{}");
    write_scan(&root.join("derivatives/x/sub-OAS30009/ses-d0000/anat/sub-OAS30009_ses-d0000_T1w.nii.gz"), "RAS");
    write(
        &root.join("clinical.csv"),
        "OASISID,days_to_visit,CDRTOT,dx1\nOAS30001,10,0,Cognitively normal\nOAS30001,380,0.5,\"AD Dementia, probable\"\n\
         OAS30002,700,1,AD Dementia\nOAS30003,0,0,Cognitively normal\nOAS30003,100,n/a,\n",
    );
}

fn options(labels: &[&str]) -> SourceOptions {
    SourceOptions { labels: labels.iter().map(|l| l.parse().unwrap()).collect(), slice: Some("axial:2".parse().unwrap()), ..Default::default() }
}

#[test]
fn an_oasis3_tree_loads_with_its_sessions_days_runs_and_visit_labels() {
    let dir = tempfile::tempdir().unwrap();
    oasis3_tree(dir.path());
    let d = Dataset::open_with(dir.path(), &options(&["clinical.csv:CDRTOT>0"])).unwrap();
    assert_eq!(d.layout(), Layout::Bids);
    let rows: Vec<(u64, u32, Label, usize)> = d.records().iter().map(|r| (r.patient.number(), r.day, r.label, r.history_len)).collect();
    // OAS30002's only visit is 600 days from its scan: unlabelled, skipped.
    assert_eq!(rows, [(30001, 0, Label::Healthy, 1), (30001, 400, Label::Disease, 2), (30003, 50, Label::Healthy, 1)]);
    assert!(d.records()[1].path.ends_with("sub-OAS30001_ses-d0400_run-01_T1w.nii.gz"), "the lowest run is used");
    assert_eq!(d.records()[0].patient.to_string(), "OAS30001");
    let report = d.report();
    assert_eq!(report.runs_left_out, 1);
    assert_eq!(report.day_source, Some(DaySource::SessionLabel));
    assert_eq!(report.skipped.get("no T1w image"), Some(&1));
    assert_eq!(report.skipped.iter().filter(|(k, _)| k.contains("within ±180 days")).map(|(_, n)| n).sum::<usize>(), 1, "{:?}", report.skipped);
    assert_eq!(report.unregistered, 3);
    // A wider window reaches OAS30002's visit.
    let mut wide = options(&["clinical.csv:CDRTOT>0"]);
    wide.visit_match.window_days = 365 * 2;
    assert_eq!(Dataset::open_with(dir.path(), &wide).unwrap().len(), 4);
    // The same anatomy in RAS, LPS and PIR cuts to the same slice, in every plane.
    for slice in ["axial:2", "coronal:mid", "sagittal:0"] {
        let mut o = wide.clone();
        o.slice = Some(slice.parse().unwrap());
        let d = Dataset::open_with(dir.path(), &o).unwrap();
        let images: Vec<_> = (0..d.len()).map(|i| d.load_image(i).unwrap()).collect();
        assert!(images.windows(2).all(|w| w[0] == w[1]), "{slice}");
    }
    // Axial 2: row 0 anterior, column 0 right.
    let img = Dataset::open_with(dir.path(), &wide).unwrap().load_image(0).unwrap();
    assert_eq!((img.height(), img.width()), (5, 6));
    assert_eq!(img.get(0, 0), anatomy(5, 4, 2));
    assert_eq!(img.get(4, 5), anatomy(0, 0, 2));
}

#[test]
fn a_clinica_tree_takes_labels_and_days_from_sessions_tsv() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (sub, sessions) in [("ADNI002S0295", ["M00", "M12", "M6"]), ("ADNI011S4105", ["M00", "M24", "M06"])] {
        for ses in sessions {
            write_scan(&anat(root, sub, ses, &format!("sub-{sub}_ses-{ses}_T1w.nii.gz")), "RAS");
        }
    }
    write(&root.join("sub-ADNI002S0295/sub-ADNI002S0295_sessions.tsv"), "session_id\tdiagnosis\tdays\nses-M00\tCN\t0\nses-M6\tMCI\t182\nses-M12\tAD\t365\n");
    write(&root.join("sub-ADNI011S4105/sub-ADNI011S4105_sessions.tsv"), "session_id\tdiagnosis\tdays\nses-M00\tCN\t0\nses-M06\tn/a\t180\nses-M24\tCN\t730\n");
    write(&root.join("participants.tsv"), "participant_id\tsex\nsub-ADNI002S0295\tF\nsub-ADNI011S4105\tM\n");
    let d = Dataset::open_with(root, &options(&["sessions:diagnosis=AD,MCI/CN"])).unwrap();
    // Days are the sessions' ranks in natural order (M6 before M12); ids are ranks of the labels.
    assert_eq!(d.report().day_source, Some(DaySource::Rank));
    assert!(d.report().subjects_by_rank);
    let rows: Vec<(String, u32, Label)> = d.records().iter().map(|r| (r.patient.to_string(), r.day, r.label)).collect();
    assert_eq!(
        rows,
        [
            ("sub-ADNI002S0295".into(), 0, Label::Healthy),
            ("sub-ADNI002S0295".into(), 1, Label::Disease),
            ("sub-ADNI002S0295".into(), 2, Label::Disease),
            ("sub-ADNI011S4105".into(), 0, Label::Healthy),
            ("sub-ADNI011S4105".into(), 2, Label::Healthy),
        ]
    );
    assert_eq!(d.records()[3].patient, PatientId::new(2));
    assert_eq!(d.find_patient("sub-ADNI011S4105"), Some(PatientId::new(2)));
    assert_eq!(d.find_patient("2"), Some(PatientId::new(2)));
    assert_eq!(d.find_patient("sub-nobody"), None);
    // With the day column, the days are the table's.
    let mut o = options(&["sessions:diagnosis=AD,MCI/CN"]);
    o.day_column = Some("days".into());
    let days: Vec<u32> = Dataset::open_with(root, &o).unwrap().records().iter().map(|r| r.day).collect();
    assert_eq!(days, [0, 182, 365, 0, 730]);
    // Clinica's CAPS layout (t1_linear/, its double-T1w names) with a merged TSV of labels
    // keyed by participant and session.
    let caps = tempfile::tempdir().unwrap();
    for ses in ["M00", "M12"] {
        let name = format!("sub-ADNI002S0295_ses-{ses}_T1w_space-MNI152NLin2009cSym_res-1x1x1_T1w.nii.gz");
        write_scan(&caps.path().join(format!("subjects/sub-ADNI002S0295/ses-{ses}/t1_linear/{name}")), "RAS");
    }
    write(&caps.path().join("labels.tsv"), "participant_id\tsession_id\tdiagnosis\nsub-ADNI002S0295\tses-M00\tCN\nsub-ADNI002S0295\tses-M12\tAD\n");
    let c = Dataset::open_with(caps.path(), &options(&["labels.tsv:diagnosis=AD/CN"])).unwrap();
    assert_eq!(c.records().iter().map(|r| (r.day, r.label)).collect::<Vec<_>>(), [(0, Label::Healthy), (1, Label::Disease)]);
    assert_eq!(c.report().unregistered, 0);
    // The manifest carries the BIDS keys.
    let m = tgc_data::manifest(&d, None).unwrap();
    assert_eq!(m.column("participant_id").unwrap().str().unwrap().get(0), Some("sub-ADNI002S0295"));
    assert_eq!(m.column("session_id").unwrap().str().unwrap().get(1), Some("ses-M6"));
}

/// The error of opening `root` with `labels` (and `edit` applied to the options).
fn error_of(root: &Path, labels: &[&str], edit: impl FnOnce(&mut SourceOptions)) -> String {
    let mut o = options(labels);
    edit(&mut o);
    Dataset::open_with(root, &o).unwrap_err().to_string()
}

#[test]
fn every_bad_table_label_and_layout_case_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    oasis3_tree(root);
    let has = |e: String, parts: &[&str]| assert!(parts.iter().all(|p| e.contains(p)), "{e} lacks {parts:?}");
    // No labels at all.
    has(error_of(root, &[], |_| {}), &["BIDS", "--labels"]);
    // A column that does not exist.
    has(error_of(root, &["clinical.csv:CDR>0"], |_| {}), &["clinical.csv", "`CDR`", "no such column", "CDRTOT"]);
    // A value of neither class: the file, line and column.
    has(error_of(root, &["clinical.csv:dx1=AD Dementia/Cognitively normal"], |_| {}), &["clinical.csv", "line 3", "`dx1`", "neither class"]);
    // A threshold on text.
    has(error_of(root, &["clinical.csv:dx1>0"], |_| {}), &["clinical.csv", "line 2", "not a number"]);
    // A visit table without the day column named.
    has(error_of(root, &["clinical.csv:CDRTOT>0"], |o| o.visit_match.day_column = Some("visit_day".into())), &["`visit_day`", "no such column"]);
    // A missing visit table.
    has(error_of(root, &["nowhere.tsv:CDRTOT>0"], |_| {}), &["nowhere.tsv", "cannot read"]);
    // Two tables that disagree.
    for sub in ["OAS30001", "OAS30002", "OAS30003"] {
        write(&root.join(format!("sub-{sub}/sub-{sub}_sessions.tsv")), "session_id\tdiagnosis\nses-d0000\tAD\nses-d0400\tAD\nses-d0100\tAD\nses-d0050\tAD\n");
    }
    has(
        error_of(root, &["clinical.csv:CDRTOT>0", "sessions:diagnosis=AD/CN"], |_| {}),
        &["disagree", "sub-OAS30001/ses-d0000", "clinical.csv line 2", "sessions.tsv line 2"],
    );
    // A truncated sessions.tsv.
    write(&root.join("sub-OAS30002/sub-OAS30002_sessions.tsv"), "session_id\tdiagnosis\nses-d0100\n");
    has(error_of(root, &["sessions:diagnosis=AD/CN"], |_| {}), &["sub-OAS30002_sessions.tsv", "line 2", "1 cells"]);
    // participants.tsv missing, or listing a subject twice.
    has(error_of(root, &["participants:group=p/c"], |_| {}), &["participants.tsv", "missing"]);
    write(&root.join("participants.tsv"), "participant_id\tgroup\nsub-OAS30001\tp\nOAS30001\tc\n");
    has(error_of(root, &["participants:group=p/c"], |_| {}), &["participants.tsv", "line 3", "appears twice"]);
    // A day column that a session lacks.
    has(error_of(root, &["clinical.csv:CDRTOT>0"], |o| o.day_column = Some("days".into())), &["sessions.tsv", "`days`", "no such column"]);
    // A visit table on sessions without days.
    let ranks = tempfile::tempdir().unwrap();
    write_scan(&anat(ranks.path(), "01", "bl", "sub-01_ses-bl_T1w.nii.gz"), "RAS");
    write(&ranks.path().join("v.csv"), "OASISID,days_to_visit,CDRTOT\n01,0,0\n");
    has(error_of(ranks.path(), &["v.csv:CDRTOT>0"], |_| {}), &["matched by day", "--day-column"]);
    // BIDS flags on OASIS_2D.
    let oasis = tempfile::tempdir().unwrap();
    has(error_of(oasis.path(), &["participants:g=a/b"], |o| o.layout = Some(Layout::Oasis2d)), &["OASIS_2D", "--labels"]);
    // Images that differ in more than their run.
    write_scan(&anat(root, "OAS30003", "d0050", "sub-OAS30003_ses-d0050_space-MNI_T1w.nii.gz"), "RAS");
    has(error_of(root, &["clinical.csv:CDRTOT>0"], |_| {}), &["ses-d0050", "differ in more than their run", "--space"]);
    // ... which a filter resolves.
    let d = Dataset::open_with(root, &{
        let mut o = options(&["clinical.csv:CDRTOT>0"]);
        o.filters = vec![("space".into(), "MNI".into())];
        o
    })
    .unwrap();
    assert_eq!((d.len(), d.report().unregistered), (1, 0));
    // A run that is not a number; a file whose subject is not its folder's.
    write_scan(&anat(root, "OAS30003", "d0050", "sub-OAS30003_ses-d0050_space-MNI_run-x_T1w.nii.gz"), "RAS");
    has(error_of(root, &["clinical.csv:CDRTOT>0"], |o| o.filters = vec![("space".into(), "MNI".into())]), &["run-x", "not a number"]);
    write_scan(&anat(root, "OAS30002", "d0100", "sub-OAS30009_ses-d0100_T1w.nii.gz"), "RAS");
    has(error_of(root, &["clinical.csv:CDRTOT>0"], |_| {}), &["sub-OAS30009_ses-d0100_T1w.nii.gz", "subject is not its folder's"]);
    // A BIDS data set read without --slice, and a slice outside the scan.
    let clean = tempfile::tempdir().unwrap();
    oasis3_tree(clean.path());
    let d = Dataset::open_with(clean.path(), &{
        let mut o = options(&["clinical.csv:CDRTOT>0"]);
        o.slice = None;
        o
    })
    .unwrap();
    has(d.load_image(0).unwrap_err().to_string(), &["--slice"]);
    let d = Dataset::open_with(clean.path(), &{
        let mut o = options(&["clinical.csv:CDRTOT>0"]);
        o.slice = Some("axial:9".parse().unwrap());
        o
    })
    .unwrap();
    has(d.load_image(0).unwrap_err().to_string(), &["sub-OAS30001_ses-d0000_T1w.nii.gz", "axial:9", "4 axial slices"]);
    // NaN voxels name the file.
    let nan = anat(clean.path(), "OAS30003", "d0050", "sub-OAS30003_ses-d0050_T1w.nii.gz");
    let data = Array3::from_elem((3, 3, 3), f32::NAN);
    WriterOptions::new(&nan).write_nifti(&data).unwrap();
    let d = Dataset::open_with(clean.path(), &options(&["clinical.csv:CDRTOT>0"])).unwrap();
    has(d.load_image(d.len() - 1).unwrap_err().to_string(), &["sub-OAS30003_ses-d0050_T1w.nii.gz", "NaN"]);
    // An empty folder with a dataset_description.json.
    let empty = tempfile::tempdir().unwrap();
    write(&empty.path().join("dataset_description.json"), "{}");
    has(error_of(empty.path(), &["participants:g=a/b"], |_| {}), &["no subject folders"]);
}

#[test]
fn synthetic_bids_cohorts_hold_the_awkward_cases() {
    let dir = tempfile::tempdir().unwrap();
    let config = tgc_data::phantom::PhantomConfig { patients: 6, size: 32, max_visits: 3, seed: 5, ..Default::default() };
    let written = tgc_data::phantom::generate_bids(dir.path(), &config).unwrap();
    let mid = |labels: &[&str]| SourceOptions { slice: Some("axial:mid".parse().unwrap()), ..options(labels) };
    let d = Dataset::open_with(dir.path(), &mid(&["sessions:diagnosis=AD/CN"])).unwrap();
    let report = d.report();
    assert_eq!(report.runs_left_out, 1);
    assert_eq!(report.skipped.get("no T1w image"), Some(&1));
    assert_eq!(d.len() + report.skipped.values().sum::<usize>() - 1, written.len());
    // The subject left out of participants.tsv is unlabelled there, labelled by its sessions.
    let p = Dataset::open_with(dir.path(), &options(&["participants:group=patient/control"])).unwrap();
    assert!(p.report().skipped.keys().any(|k| k.contains("not in participants.tsv")));
    assert!(p.records().iter().all(|r| r.patient.number() != 30_006));
    // Phantom labels follow the disease model; every labelled slice has its mask.
    for (i, r) in d.records().iter().enumerate() {
        assert_eq!(r.label, if (r.patient.number() - 30_001) % 2 == 0 { Label::Disease } else { Label::Healthy });
        let (image, mask) = (d.load_image(i).unwrap(), tgc_data::phantom::load_mask(&d, i).unwrap());
        assert_eq!((image.height(), image.width()), (mask.height(), mask.width()));
        assert!(mask.pixels().iter().any(|&v| v == 1.0), "no ventricles in the mid slice of {}", r.path.display());
    }
    // A non-RAS subject (PIR) cuts to the same kind of slice as its RAS neighbours.
    let clinical = Dataset::open_with(dir.path(), &options(&["phenotype/clinical.csv:CDRTOT>0"])).unwrap();
    assert!(clinical.len() >= d.len() - 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random names under sub-/ses-/anat folders and truncated tables: an error or a data
    /// set, never a panic.
    #[test]
    fn fuzzed_bids_trees_never_panic(
        names in proptest::collection::vec("(sub-[a-z0-9_-]{0,4}|ses-[a-z0-9]{0,3}|anat|[a-z_.-]{0,6})(_[a-z]{1,3}-[a-z0-9]{0,2}){0,3}(_T1w)?(\\.nii|\\.nii\\.gz|\\.tsv|)", 1..8),
        table in "[a-z_\t\n/0-9-]{0,60}",
        cut in 0usize..40,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let template = root.join("template.nii");
        write_scan(&template, "RAS");
        let scan = std::fs::read(&template).unwrap();
        std::fs::remove_file(&template).unwrap();
        let mut path = root.to_path_buf();
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || name == "." || name == ".." {
                continue;
            }
            path = if i % 3 == 2 { root.join(name) } else { path.join(name) };
            // A name already taken by a file or folder of the other kind is left as it is.
            if path.exists() || std::fs::create_dir_all(path.parent().unwrap()).is_err() {
                path = root.to_path_buf();
                continue;
            }
            if name.ends_with(".nii") || name.ends_with(".nii.gz") {
                std::fs::write(&path, &scan[..scan.len().min(cut * 20 + 300)]).unwrap();
                path = path.parent().unwrap().to_path_buf();
            } else if name.ends_with(".tsv") {
                std::fs::write(&path, &table).unwrap();
                path = path.parent().unwrap().to_path_buf();
            } else {
                std::fs::create_dir_all(&path).unwrap();
            }
        }
        write(&root.join("participants.tsv"), &format!("participant_id\tgroup\n{}", &table[..table.len().min(cut)]));
        for labels in ["participants:group=a/b", "sessions:group>0"] {
            let result = std::panic::catch_unwind(|| {
                if let Ok(d) = Dataset::open_with(root, &options(&[labels])) {
                    for i in 0..d.len() {
                        let _ = d.load_image(i);
                    }
                }
            });
            prop_assert!(result.is_ok(), "panicked on {names:?}");
        }
    }
}
