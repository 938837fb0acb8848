//! Shards of a data set: the `K/N` a job array gives each task, and which participants each
//! shard takes — whole participants (a patient's visits never split), balanced by image count,
//! the same on every machine.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{DataError, Result};
use crate::{Dataset, PatientId};

/// Shard `index` of `count` (0-based), written `K/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// A checked shard: `count` ≥ 1 and `index` < `count`, else an error naming `source`.
    pub fn new(index: usize, count: usize, source: &str) -> Result<Self> {
        if count == 0 {
            return Err(DataError::InvalidArgument(format!("{source}: a data set cannot be cut into 0 shards")));
        }
        if index >= count {
            return Err(DataError::InvalidArgument(format!("{source}: shard {index} does not exist among {count} (shards are numbered 0 to {})", count - 1)));
        }
        Ok(Self { index, count })
    }

    /// The shard a job scheduler gives this task, from `env` (a lookup such as
    /// `|k| std::env::var(k).ok()`):
    /// - Slurm: `SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_COUNT`, or with
    ///   `SLURM_ARRAY_TASK_MIN`/`MAX` (shard = task id − min, count = max − min + 1); with
    ///   `shards` the task id is the shard of that many (so one task resubmitted alone as
    ///   `--array=K` is still shard K);
    /// - Kubernetes' Indexed Jobs: `JOB_COMPLETION_INDEX`, with `shards` (`--shards N`).
    ///
    /// `None` when neither is set (one process does everything); an error when a variable is
    /// set but the shard cannot be formed (the other half missing, a non-number, index ≥ count).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>, shards: Option<usize>) -> Result<Option<Self>> {
        let number = |key: &str| -> Result<Option<usize>> {
            match env(key) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| DataError::InvalidArgument(format!("{key}={v} is not a task number"))),
            }
        };
        if let Some(task) = number("SLURM_ARRAY_TASK_ID")? {
            // With --shards N the task ids are the shard numbers: a failed task can then be
            // resubmitted alone (`sbatch --array=K`), whatever that array's own size.
            if let Some(n) = shards {
                return Self::new(task, n, &format!("SLURM_ARRAY_TASK_ID={task} with --shards {n}")).map(Some);
            }
            let (min, max, count) = (number("SLURM_ARRAY_TASK_MIN")?, number("SLURM_ARRAY_TASK_MAX")?, number("SLURM_ARRAY_TASK_COUNT")?);
            let (index, total) = match (min, max, count) {
                (Some(min), Some(max), _) if max >= min && task >= min => (task - min, max - min + 1),
                (Some(min), Some(max), _) => {
                    return Err(DataError::InvalidArgument(format!("SLURM_ARRAY_TASK_ID={task} lies outside SLURM_ARRAY_TASK_MIN={min}..SLURM_ARRAY_TASK_MAX={max}")))
                }
                (None, None, Some(count)) => (task, count),
                _ => {
                    return Err(DataError::InvalidArgument(format!(
                        "SLURM_ARRAY_TASK_ID={task} is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN and _MAX are: the shard count is unknown (give --shard K/N)"
                    )))
                }
            };
            return Self::new(index, total, "the Slurm array task").map(Some);
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = shards.ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "JOB_COMPLETION_INDEX={index} is set but not the number of shards: give --shards N (the Indexed Job's completions)"
                ))
            })?;
            return Self::new(index, count, "JOB_COMPLETION_INDEX").map(Some);
        }
        if let Some(n) = shards {
            return Err(DataError::InvalidArgument(format!(
                "--shards {n} without a shard index: give --shard K/{n}, or run as a Slurm array task or an Indexed Job (JOB_COMPLETION_INDEX)"
            )));
        }
        Ok(None)
    }

    /// The shard of `--shard K/N` if given, else of the environment ([`Shard::from_env`]).
    pub fn resolve(flag: Option<Shard>, shards: Option<usize>, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        match (flag, shards) {
            (Some(s), Some(n)) if n != s.count => Err(DataError::InvalidArgument(format!("--shard {s} and --shards {n} disagree"))),
            (Some(s), _) => Ok(Some(s)),
            (None, shards) => Self::from_env(env, shards),
        }
    }

    /// The folder name of this shard's part: `K-of-N`.
    pub fn part_name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || DataError::InvalidArgument(format!("shard `{s}`: expected K/N, e.g. 0/4 (the first of four)"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        Self::new(k, n, &format!("--shard {s}"))
    }
}

/// Which shard each participant of `images` (indices into `dataset`) falls in: participants
/// sorted by their number of images (most first, then by patient), each given to the shard with
/// the fewest images so far (the lowest such shard). Deterministic, so every task computes the
/// same assignment from the same inputs.
pub fn assign(dataset: &Dataset, images: &[usize], count: usize) -> BTreeMap<PatientId, usize> {
    let mut per_patient: BTreeMap<PatientId, usize> = BTreeMap::new();
    for &i in images {
        *per_patient.entry(dataset.records()[i].patient).or_default() += 1;
    }
    let mut order: Vec<(PatientId, usize)> = per_patient.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut load = vec![0usize; count.max(1)];
    let mut assigned = BTreeMap::new();
    for (patient, n) in order {
        let shard = (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[shard] += n;
        assigned.insert(patient, shard);
    }
    assigned
}

/// The images of `images` (in their order) whose participant falls in `shard`.
pub fn select(dataset: &Dataset, images: &[usize], shard: Shard) -> Vec<usize> {
    let assigned = assign(dataset, images, shard.count);
    images.iter().copied().filter(|&i| assigned.get(&dataset.records()[i].patient) == Some(&shard.index)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn shards_come_from_the_flag_slurm_or_an_indexed_job() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "0/0", "1", "a/b", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!("4/4".parse::<Shard>().unwrap_err().to_string().contains("numbered 0 to 3"));
        let none = env(&[]);
        assert_eq!(Shard::resolve(None, None, &none).unwrap(), None);
        let slurm = env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert_eq!(Shard::resolve(None, None, &slurm).unwrap(), Some(Shard { index: 3, count: 4 }));
        // An array 10-13: task 12 is shard 2 of 4.
        let offset = env(&[("SLURM_ARRAY_TASK_ID", "12"), ("SLURM_ARRAY_TASK_MIN", "10"), ("SLURM_ARRAY_TASK_MAX", "13")]);
        assert_eq!(Shard::resolve(None, None, &offset).unwrap(), Some(Shard { index: 2, count: 4 }));
        let half = env(&[("SLURM_ARRAY_TASK_ID", "1")]);
        assert!(Shard::resolve(None, None, &half).unwrap_err().to_string().contains("SLURM_ARRAY_TASK_COUNT"));
        let k8s = env(&[("JOB_COMPLETION_INDEX", "1")]);
        assert_eq!(Shard::resolve(None, Some(3), &k8s).unwrap(), Some(Shard { index: 1, count: 3 }));
        assert!(Shard::resolve(None, None, &k8s).unwrap_err().to_string().contains("--shards"));
        assert!(Shard::resolve(None, Some(1), &k8s).unwrap_err().to_string().contains("shard 1 does not exist among 1"));
        assert!(Shard::resolve(None, Some(3), &none).unwrap_err().to_string().contains("--shard K/3"));
        // --shards N: the task id is the shard (a task resubmitted alone keeps its number).
        let alone = env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_COUNT", "1")]);
        assert_eq!(Shard::resolve(None, Some(4), &alone).unwrap(), Some(Shard { index: 3, count: 4 }));
        assert!(Shard::resolve(None, Some(3), &slurm).unwrap_err().to_string().contains("shard 3 does not exist among 3"));
        // The flag wins over the environment.
        assert_eq!(Shard::resolve(Some(Shard { index: 0, count: 2 }), None, &slurm).unwrap(), Some(Shard { index: 0, count: 2 }));
        let garbage = env(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert!(Shard::resolve(None, None, &garbage).unwrap_err().to_string().contains("SLURM_ARRAY_TASK_ID=x"));
    }
}
