#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, for tests/e2e/test_slurm.py (and for trying
# profiles/slurm by hand). Debian's slurm-wlm + munge; no systemd, no slurmdbd.
#
#   scripts/slurm_local.sh start [DIR]    install (apt-get, if missing) and start munged, slurmctld, slurmd
#   scripts/slurm_local.sh stop  [DIR]    cancel its jobs and stop the three daemons (by their PIDs)
#   scripts/slurm_local.sh status [DIR]   sinfo + squeue of the local cluster
#
# Everything lives in DIR (default $MA_SLURM_DIR or /tmp/ma-slurm): slurm.conf, gres.conf, state, logs,
# PID files, and jobcomp.log (one line per finished job: the evidence that a job ran through SLURM, since
# there is no accounting database); only the munge socket lives in /run. While it runs,
# /etc/slurm/slurm.conf and gres.conf link to DIR, so every SLURM client finds it (the script refuses
# to replace a real /etc/slurm/slurm.conf). `start` prints SLURM_CONF, the partitions and the GPU type
# as KEY=VALUE lines on stdout.
#
# The cluster: one node (this machine, as `slurmd -C` describes it), partitions `cpu` (default) and
# `gpu`, and one GPU GRES of type `fake` backed by /dev/null (SLURM drops file-less GPUs): jobs asking
# for a GPU are scheduled as on a real cluster and run on the CPU. The node advertises at least 512 GB
# of memory (SlurmdParameters=config_overrides), so the real profile's memory requests are accepted;
# nothing is enforced (proctrack/linuxproc, task/none). MinJobAge=300 s keeps finished jobs visible to `squeue` long enough for Snakemake's
# status checks (--slurm-status-command squeue).
#
# Exit status of `start`: 0 running; 3 SLURM cannot run here (not root, no apt-get, install failed,
# a daemon did not come up) - the reason is the last line on stderr; anything else is a bug here.
set -euo pipefail

ACTION=${1:-}
DIR=$(realpath -m "${2:-${MA_SLURM_DIR:-/tmp/ma-slurm}}")
CTLD_PORT=${MA_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${MA_SLURM_SLURMD_PORT:-16818}
CLUSTER=ma-local
GPU_TYPE=fake
# munged wants every directory above its socket world-executable (pytest's tmp dirs are 0700): the
# socket lives in /run, in a folder named after DIR
MUNGE_DIR=/run/ma-slurm-munge-$(cksum <<<"$DIR" | cut -d' ' -f1)

STARTING=0
cannot() {  # give up: say why, stop whatever this `start` already started, exit 3
    echo "slurm_local: cannot run SLURM here: $*" >&2
    if [[ $STARTING == 1 ]]; then STARTING=0; stop >&2 || true; echo "slurm_local: cannot run SLURM here: $*" >&2; fi
    exit 3
}
log() { echo "slurm_local: $*" >&2; }

pid_of() { [[ -s $1 ]] && cat "$1" || true; }

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait up to 10 s, then KILL
    local name=$1 pid
    pid=$(pid_of "$2")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
        if alive "$pid"; then log "$name ($pid) ignored TERM, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
        log "stopped $name ($pid)"
    fi
    rm -f "$2"
}

install_if_missing() {
    local missing=0
    for b in munged slurmctld slurmd sbatch squeue scontrol; do
        command -v "$b" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$b" >/dev/null 2>&1 || missing=1
    done
    [[ $missing == 0 ]] && return 0
    command -v apt-get >/dev/null 2>&1 || cannot "slurm-wlm/munge are not installed and there is no apt-get"
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout 240 apt-get install -y -q --no-install-recommends slurm-wlm munge >"$DIR/apt.log" 2>&1; then
        timeout 120 apt-get update -q >>"$DIR/apt.log" 2>&1 || true
        timeout 240 apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$DIR/apt.log" 2>&1 \
            || cannot "apt-get install slurm-wlm munge failed (see $DIR/apt.log: $(tail -n 1 "$DIR/apt.log"))"
    fi
}

write_conf() {
    local host node_line mem
    host=$(hostname -s)
    node_line=$(slurmd -C | head -n 1)             # NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105
    [[ $node_line == NodeName=* ]] || cannot "slurmd -C did not describe this node: $node_line"
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
    (( mem < 512000 )) && mem=512000
    node_line=$(sed -e "s/^NodeName=[^ ]*/NodeName=$host/" -e "s/RealMemory=[0-9]*/RealMemory=$mem/" <<<"$node_line")
    cat >"$DIR/slurm.conf" <<EOF
# written by scripts/slurm_local.sh - a single-node test cluster
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_DIR/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=300
MaxJobCount=10000
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
GresTypes=gpu
$node_line Gres=gpu:$GPU_TYPE:1 NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/gres.conf" <<EOF
# written by scripts/slurm_local.sh - one fake GPU (no device behind it)
NodeName=$host Name=gpu Type=$GPU_TYPE File=/dev/null
EOF
    echo "$host" >"$DIR/nodename"
}

# The jobs' own `srun` (snakemake-executor-plugin-slurm-jobstep) drops SLURM_* variables, SLURM_CONF
# included, so the config must be where every SLURM client looks by default: /etc/slurm/slurm.conf,
# linked to DIR while the cluster runs. A real /etc/slurm/slurm.conf is never touched.
ETC=/etc/slurm
ours() { [[ -L $1 && $(readlink "$1") == "$DIR/"* ]]; }

link_etc() {
    mkdir -p "$ETC"
    for f in slurm.conf gres.conf; do
        if [[ -e $ETC/$f || -L $ETC/$f ]] && ! ours "$ETC/$f"; then
            if [[ -L $ETC/$f && $(head -n 1 "$ETC/$f" 2>/dev/null) == "# written by scripts/slurm_local.sh"* ]] \
                || [[ -L $ETC/$f && ! -e $ETC/$f ]]; then
                local other
                other=$(dirname "$(readlink "$ETC/$f")")
                alive "$(pid_of "$other/slurmctld.pid")" && cannot "another local SLURM runs from $other (stop it first)"
                rm -f "$ETC/$f"    # left over from another DIR of this script
            else
                cannot "$ETC/$f exists (a real SLURM configuration?); not replacing it"
            fi
        fi
        ln -sfn "$DIR/$f" "$ETC/$f"
    done
}

unlink_etc() {
    for f in slurm.conf gres.conf; do ours "$ETC/$f" && rm -f "$ETC/$f"; done; true
}

start() {
    [[ $(id -u) == 0 ]] || cannot "not root (the daemons and apt-get need root)"
    mkdir -p "$DIR"
    if alive "$(pid_of "$DIR/slurmctld.pid")"; then
        log "already running in $DIR"
    else
        STARTING=1
        install_if_missing
        export PATH=$PATH:/usr/sbin:/sbin
        [[ -s /etc/munge/munge.key ]] || { command -v mungekey >/dev/null && mungekey --create --keyfile=/etc/munge/munge.key \
            && chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key; } || cannot "no munge key"
        rm -rf "$DIR/state" "$DIR/spool" "$MUNGE_DIR"
        mkdir -p "$DIR/state" "$DIR/spool" "$MUNGE_DIR"
        chown munge:munge "$MUNGE_DIR" && chmod 755 "$MUNGE_DIR"
        write_conf

        link_etc
        local err
        err=$(runuser -u munge -- munged --socket="$MUNGE_DIR/munge.socket" --pid-file="$MUNGE_DIR/munged.pid" \
            --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" 2>&1) \
            || cannot "munged did not start: $err"
        cp "$MUNGE_DIR/munged.pid" "$DIR/munged.pid"
        export SLURM_CONF=$DIR/slurm.conf
        slurmctld -f "$SLURM_CONF" -c || cannot "slurmctld did not start: $(tail -n 2 "$DIR/slurmctld.log" 2>/dev/null)"
        slurmd -f "$SLURM_CONF" || cannot "slurmd did not start: $(tail -n 2 "$DIR/slurmd.log" 2>/dev/null)"
    fi
    export PATH=$PATH:/usr/sbin:/sbin SLURM_CONF=$DIR/slurm.conf
    local node state=""
    node=$(cat "$DIR/nodename")
    for i in $(seq 60); do
        state=$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n 1 || true)
        [[ $state == idle || $state == mixed || $state == allocated ]] && break
        [[ $state == inval* ]] && break
        [[ $state == down* || $state == drain* ]] && (( i % 5 == 0 )) \
            && scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
        sleep 0.5
    done
    [[ $state == idle || $state == mixed || $state == allocated ]] \
        || { log "$(tail -n 5 "$DIR/slurmctld.log" "$DIR/slurmd.log" 2>/dev/null)"; cannot "node $node is '${state:-unknown}', not idle, after 30 s"; }
    STARTING=0
    log "SLURM is up in $DIR (node $node: $state)"
    echo "SLURM_CONF=$DIR/slurm.conf"
    echo "SLURM_CPU_PARTITION=cpu"
    echo "SLURM_GPU_PARTITION=gpu"
    echo "SLURM_GPU_TYPE=$GPU_TYPE"
    echo "SLURM_JOBCOMP=$DIR/jobcomp.log"
}

stop() {
    export PATH=$PATH:/usr/sbin:/sbin SLURM_CONF=$DIR/slurm.conf
    if alive "$(pid_of "$DIR/slurmctld.pid")"; then
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        # shellcheck disable=SC2086  # one argument per job id
        [[ -n $jobs ]] && { log "cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"; scancel $jobs 2>/dev/null || true; sleep 1; }
    fi
    stop_pid slurmd "$DIR/slurmd.pid"
    stop_pid slurmctld "$DIR/slurmctld.pid"
    stop_pid munged "$DIR/munged.pid"
    [[ -d $MUNGE_DIR ]] && { cp -f "$MUNGE_DIR/munged.log" "$DIR/munged.log" 2>/dev/null || true; rm -rf "$MUNGE_DIR"; }
    unlink_etc
}

case $ACTION in
    start) start ;;
    stop) stop ;;
    status) SLURM_CONF=$DIR/slurm.conf sinfo; SLURM_CONF=$DIR/slurm.conf squeue ;;
    *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
