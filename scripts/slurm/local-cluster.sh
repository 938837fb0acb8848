#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for tests and for trying the job scripts: Debian's
# slurmctld, slurmd, slurm-client and munge, run as root without systemd.
#
#   scripts/slurm/local-cluster.sh start DIR   # writes DIR/slurm.conf, starts the daemons, waits
#                                              # for the node; prints `export SLURM_CONF=…`
#   scripts/slurm/local-cluster.sh stop DIR    # stops the daemons it started (by their pids)
#
# Everything (configuration, spool, state, logs, pids) lives in DIR. munged is started with
# `service munge start` when it is not running (and then left running: other clusters may use it).
set -euo pipefail
cmd=${1:?usage: local-cluster.sh start|stop DIR}
dir=${2:?usage: local-cluster.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

stop() {
  for daemon in slurmd slurmctld; do
    if [ -f "$dir/$daemon.pid" ]; then
      pid=$(cat "$dir/$daemon.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$daemon.pid"
    fi
  done
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "unknown command $cmd (start|stop)" >&2; exit 2 ;;
esac

[ "$(id -u)" = 0 ] || { echo "local-cluster.sh needs root (SlurmUser=root)" >&2; exit 3; }
for tool in slurmctld slurmd sbatch sinfo munged; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 3; }
done
pgrep -x munged >/dev/null || service munge start >/dev/null
mkdir -p "$dir/spool" "$dir/state" "$dir/log"
cpus=$(nproc)
cat > "$dir/slurm.conf" <<CONF
ClusterName=tgc-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldPort=$((6817 + RANDOM % 500 * 2))
SlurmdPort=$((7817 + RANDOM % 500 * 2))
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SchedulerParameters=defer_batch
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
echo "CgroupPlugin=cgroup/v1" > "$dir/cgroup.conf"
export SLURM_CONF=$dir/slurm.conf
stop
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N localhost
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "the node did not come up within 20 s; logs in $dir/log" >&2
tail -5 "$dir/log/"*.log >&2 || true
stop
exit 1
