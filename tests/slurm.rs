//! The pipeline on a real Slurm cluster: a one-node cluster on localhost
//! (`scripts/slurm/local-cluster.sh`: Debian's slurmctld, slurmd, slurm-client and munge, as
//! root), `scripts/slurm/pipeline.sh` submitting the chain of 4-task arrays and their merges,
//! the merged outputs compared byte for byte with one process's; then one array task cancelled
//! mid-way and resubmitted, with nothing lost and nothing twice. Skipped, saying why, where the
//! packages or root are missing (`.ci/run` installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ok, s_, same_tree, text, tgc};

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm")
}

/// Why the cluster cannot run here, if it cannot.
fn cannot_run() -> Option<String> {
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    if !root {
        return Some("not root (the local cluster runs slurmctld and slurmd as root)".into());
    }
    for tool in ["slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("{tool} is not installed (apt-get install slurmctld slurmd slurm-client munge)"));
        }
    }
    None
}

/// A running local cluster; its daemons are stopped (by their pids) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let o = Command::new(scripts().join("local-cluster.sh")).arg("start").arg(dir).output().unwrap();
        assert!(o.status.success(), "the local cluster did not start: {}", text(&o));
        Cluster { dir: dir.to_path_buf(), conf: dir.join("slurm.conf") }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let o = self.command(program).args(args).output().unwrap();
        assert!(o.status.success(), "{program} {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("local-cluster.sh")).arg("stop").arg(&self.dir).output();
    }
}

#[test]
fn the_pipeline_on_a_local_slurm_cluster_equals_one_process() {
    if let Some(why) = cannot_run() {
        println!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cluster = Cluster::start(&root.join("cluster"));
    let cache = root.join("cache");
    let data = root.join("ph");
    ok(tgc(&["data", "synth", "--out", s_(&data), "--patients", "8", "--size", "64", "--max-visits", "3", "--seed", "3"], &cache));
    let out = root.join("pipeline");
    let tgc_bin = env!("CARGO_BIN_EXE_tgc");
    let explain = "--split all --samples-per-class 3 --method gradcam,guided-backprop";
    let faith = "--split all --samples-per-class 3 --method gradcam --curve-steps 5 --infidelity-samples 2 --sensitivity-samples 2 --no-road";
    let o = cluster
        .command(s_(&scripts().join("pipeline.sh")))
        .args(["--tgc", tgc_bin, "--data", s_(&data), "--out", s_(&out), "--shards", "4", "--parallel", "2", "--weights", "random:2"])
        .args(["--train", "--iterations 1 --epochs 3", "--explain", explain, "--faithfulness", faith, "--temporal", "--steps 4", "--wait"])
        .env("TGC_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert!(o.status.success(), "the Slurm pipeline failed: {}", text(&o));
    assert!(text(&o).contains("pipeline complete"), "{}", text(&o));
    let jobs = std::fs::read_to_string(out.join("slurm/jobs.txt")).unwrap();
    assert_eq!(jobs.lines().count(), 10, "{jobs}");

    // One process, with the same (absolute) arguments, from the pipeline's own trained models.
    let one = root.join("one");
    let (d, run, dnn) = (s_(&data).to_owned(), out.join("train/ResNet/0"), out.join("train/ResNet_seq_3/0"));
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let local = |args: Vec<String>| ok(tgc(&args.iter().map(String::as_str).collect::<Vec<_>>(), &cache));
    std::fs::create_dir_all(&one).unwrap();
    let features = one.join("features.safetensors");
    local([words("extract --backbone resnet18 --weights random:2 --data"), vec![d.clone(), "--out".into(), s_(&features).into()]].concat());
    assert!(std::fs::read(&features).unwrap() == std::fs::read(out.join("features.safetensors")).unwrap(), "features differ");
    let with = |step: &str, run: &Path, extra: &str, to: &str| {
        local(
            [vec![step.to_owned(), "--run".into(), s_(run).into(), "--data".into(), d.clone()], words(extra), vec!["--out".into(), s_(&one.join(to)).into()]]
                .concat(),
        )
    };
    with("explain", &run, explain, "explain");
    with("faithfulness", &run, faith, "faithfulness");
    with("explain-temporal", &dnn, "--steps 4", "temporal");
    for step in ["explain", "faithfulness", "temporal"] {
        same_tree(&one.join(step), &out.join(step));
    }
    assert!(std::fs::read_to_string(out.join("REPORT.md")).unwrap().contains("Faithfulness of ResNet explanations (RANDOM-INIT"));

    // An array task cancelled mid-way (its part begun, not complete) and resubmitted alone.
    let slow = format!(
        "{tgc_bin} explain --run {} --data {d} --split all --samples-per-class 3 --method integrated-gradients --steps 150 --out {} --shards 4",
        s_(&run),
        s_(&root.join("ig"))
    );
    let log = root.join("ig-%A_%a.log");
    let array = cluster.run("sbatch", &["--parsable", "--array=0-3%4", "--requeue", "--output", s_(&log), "--wrap", &slow]);
    let part = root.join("ig.parts/1-of-4");
    let started = Instant::now();
    while !part.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "task 1 never began its part");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.run("scancel", &[&format!("{array}_1")]);
    let finished = |id: &str| cluster.run("squeue", &["-h", "-j", id, "-o", "%i"]).is_empty();
    while !finished(&array) {
        assert!(started.elapsed() < Duration::from_secs(120), "the array did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(part.exists() && !part.join("part.json").exists(), "task 1 was cancelled after it completed; the test needs it cut mid-way");
    let merged = root.join("ig");
    let o = tgc(&["merge", s_(&merged)], &cache);
    assert!(!o.status.success() && text(&o).contains("shard 1/4 of `tgc explain` is missing"), "{}", text(&o));
    let again = cluster.run("sbatch", &["--parsable", "--wait", "--array=1", "--requeue", "--output", s_(&log), "--wrap", &slow]);
    assert!(!again.is_empty());
    ok(tgc(&["merge", s_(&merged)], &cache));
    let single = root.join("ig-one");
    let one_process = slow.replace(s_(&merged), s_(&single)).replace(" --shards 4", "");
    ok(tgc(&one_process.split_whitespace().skip(1).collect::<Vec<_>>(), &cache));
    same_tree(&single, &merged);
    drop(cluster);
}
