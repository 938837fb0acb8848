#!/usr/bin/env bash
# The tgc pipeline as a chain of Slurm jobs (the BIDS-Apps convention: participant-level work in
# job arrays, group-level steps after them):
#
#   extract (array) → merge → train, train-temporal → explain, faithfulness, explain-temporal
#   (arrays) → their merges → report
#
# every job after the first held with --dependency=afterok on those it reads, every array task
# `--requeue`-able (a preempted or resubmitted task redoes only its own part; a part already
# complete is skipped), every array `--array=0-(N-1)%M`.
#
#   scripts/slurm/pipeline.sh --tgc /path/to/tgc --data DIR --out DIR [options]
#
# Options:
#   --shards N          array tasks per heavy step (default 4)
#   --parallel M        at most M of them at once (default: N)
#   --backbone B        resnet18 (default) or vit
#   --weights W         the backbone's weights (default: tgc's, from models/backbones.json)
#   --source 'ARGS'     data options for every step, e.g. '--labels sessions:diagnosis=AD/CN
#                       --slice axial:mid' for a BIDS cohort, '--participant-label 01 02'
#   --train 'ARGS'      extra options of train and train-temporal (default '--iterations 1')
#   --explain 'ARGS'    extra options of explain (default '--split test --samples-per-class 4')
#   --faithfulness 'ARGS'  extra options of faithfulness (default: as --explain)
#   --temporal 'ARGS'   extra options of explain-temporal (default '--steps 20')
#   --gpu               --gres=gpu:1 on the jobs that run the backbone, and --device cuda
#                       (a CUDA build of tgc: scripts/build-cuda.sh)
#   --sbatch 'ARGS'     more sbatch options for every job (partition, account, time…)
#   --wait              wait for the chain; exit non-zero naming every job that did not complete
#
# Prints the job ids (`step id` per line) and, with --wait, where the results are. Logs go to
# OUT/slurm/<step>-<job>_<task>.log. Kubernetes: docs/SCALING.md has an Indexed Job using the
# same tgc flags (--shards N with JOB_COMPLETION_INDEX).
set -euo pipefail

shards=4 parallel= backbone=resnet18 weights= source= gpu=0 wait=0 extra_sbatch=
train_args="--iterations 1" explain_args="--split test --samples-per-class 4" faith_args= temporal_args="--steps 20"
tgc= data= out=
while [ $# -gt 0 ]; do
  case "$1" in
    --tgc) tgc=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --backbone) backbone=$2; shift 2 ;;
    --weights) weights=$2; shift 2 ;;
    --source) source=$2; shift 2 ;;
    --train) train_args=$2; shift 2 ;;
    --explain) explain_args=$2; shift 2 ;;
    --faithfulness) faith_args=$2; shift 2 ;;
    --temporal) temporal_args=$2; shift 2 ;;
    --gpu) gpu=1; shift ;;
    --sbatch) extra_sbatch=$2; shift 2 ;;
    --wait) wait=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "pipeline.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$tgc" ] && [ -n "$data" ] && [ -n "$out" ] || { echo "pipeline.sh: --tgc, --data and --out are required (see --help)" >&2; exit 2; }
case "$shards" in ''|*[!0-9]*|0) echo "pipeline.sh: --shards must be a positive number, got '$shards'" >&2; exit 2 ;; esac
parallel=${parallel:-$shards}
faith_args=${faith_args:-$explain_args}
[ -x "$tgc" ] || { echo "pipeline.sh: $tgc is not an executable tgc" >&2; exit 2; }
[ -d "$data" ] || { echo "pipeline.sh: data folder $data does not exist" >&2; exit 2; }
command -v sbatch >/dev/null || { echo "pipeline.sh: sbatch not found (is this a Slurm login node?)" >&2; exit 2; }
tgc=$(cd "$(dirname "$tgc")" && pwd)/$(basename "$tgc")
data=$(cd "$data" && pwd)
mkdir -p "$out/slurm"
out=$(cd "$out" && pwd)

weights_arg=${weights:+--weights $weights}
device_arg= gres=
if [ "$gpu" = 1 ]; then device_arg="--device cuda"; gres="--gres=gpu:1"; fi
case "$backbone" in resnet18) model=ResNet ;; vit) model=ViT ;; *) echo "pipeline.sh: --backbone resnet18 or vit" >&2; exit 2 ;; esac
features=$out/features.safetensors
ledger=$out/slurm/jobs.txt
: > "$ledger"

# submit NAME DEPENDENCIES ARRAY(0/1) BACKBONE(0/1) COMMAND…: prints the job id.
submit() {
  local name=$1 after=$2 array=$3 heavy=$4; shift 4
  local opts=(--parsable --job-name "tgc-$name" --kill-on-invalid-dep=yes --chdir "$out")
  local command=$*
  if [ "$array" = 1 ]; then
    # --shards N: the task id is the shard, so a task resubmitted alone (--array=K) is still K.
    command+=" --shards $shards"
    opts+=(--array "0-$((shards - 1))%$parallel" --requeue --output "$out/slurm/$name-%A_%a.log")
  else
    opts+=(--output "$out/slurm/$name-%j.log")
  fi
  [ -n "$after" ] && opts+=(--dependency "afterok:$after")
  [ "$heavy" = 1 ] && [ -n "$gres" ] && opts+=("$gres")
  # shellcheck disable=SC2086
  local id
  id=$(sbatch "${opts[@]}" $extra_sbatch --wrap "$command")
  id=${id%%;*}
  echo "$name $id" >> "$ledger"
  echo "$name $id" >&2
  echo "$id"
}

# shellcheck disable=SC2086
e=$(submit extract "" 1 1 "exec $tgc extract --backbone $backbone $weights_arg --data $data $source --out $features $device_arg")
mf=$(submit merge-features "$e" 0 0 "exec $tgc merge $features")
t=$(submit train "$mf" 0 0 "$tgc train --features $features --out $out/train $train_args && exec $tgc train-temporal --features $features --out $out/train $train_args")
x=$(submit explain "$t" 1 1 "exec $tgc explain --run $out/train/$model/0 --data $data $source $explain_args --out $out/explain $device_arg")
f=$(submit faithfulness "$t" 1 1 "exec $tgc faithfulness --run $out/train/$model/0 --data $data $source $faith_args --out $out/faithfulness $device_arg")
p=$(submit explain-temporal "$t" 1 1 "exec $tgc explain-temporal --run $out/train/${model}_seq_3/0 --data $data $source $temporal_args --out $out/temporal $device_arg")
mx=$(submit merge-explain "$x" 0 0 "exec $tgc merge $out/explain")
mfa=$(submit merge-faithfulness "$f" 0 0 "exec $tgc merge $out/faithfulness")
mp=$(submit merge-temporal "$p" 0 0 "exec $tgc merge $out/temporal")
report_cmd="set -e; $tgc results $out/train/$model/results.csv $out/train/${model}_seq_3/results.csv --out $out/results.csv"
report_cmd+="; { echo '# tgc pipeline on $data'; echo; cat $out/faithfulness/faithfulness.md; } > $out/REPORT.md.tmp && mv $out/REPORT.md.tmp $out/REPORT.md"
r=$(submit report "$mx:$mfa:$mp" 0 0 "$report_cmd")

[ "$wait" = 1 ] || exit 0
mapfile -t jobs < "$ledger"
ids=$(awk '{print $2}' "$ledger" | paste -sd,)
while [ -n "$(squeue -h -j "$ids" -o %i 2>/dev/null)" ]; do sleep 2; done
if [ -f "$out/REPORT.md" ] && [ "$out/REPORT.md" -nt "$ledger" ]; then
  echo "pipeline complete: $out/REPORT.md, $out/results.csv, $out/explain, $out/faithfulness, $out/temporal"
  exit 0
fi
echo "pipeline failed; jobs that did not complete:" >&2
for job in "${jobs[@]}"; do
  name=${job% *} id=${job#* }
  scontrol -o show job "$id" 2>/dev/null | while read -r line; do
    state=$(grep -o 'JobState=[A-Z_]*' <<<"$line" | cut -d= -f2)
    [ "$state" = COMPLETED ] && continue
    task=$(grep -o 'ArrayTaskId=[0-9]*' <<<"$line" | cut -d= -f2 || true)
    log=$(grep -o 'StdOut=[^ ]*' <<<"$line" | cut -d= -f2 || true)
    echo "  $name: job $id${task:+ task $task} $state (log: $log)" >&2
  done
done
exit 1
