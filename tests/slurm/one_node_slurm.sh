# A private one-node SLURM for the SLURM test (sourced by run.sh; root, Debian).
#
# Everything but munge lives in $WORK: slurm.conf (found through SLURM_CONF by
# the daemons, the commands and the jobs), state, spool, logs and pid files;
# /etc/slurm is not touched. munge is the system's: reused when it already
# answers, else started here and stopped again. Facts behind the settings:
# ../shared/SLURM.md of the project (Slurm 22.05 from Debian 12).

SLURM_PACKAGES=(slurmd slurmctld slurm-client munge)

log() { echo "test-slurm: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

install_slurm() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
        command -v munged >/dev/null; then
        log "SLURM and munge already installed"
        return
    fi
    log "apt-get install ${SLURM_PACKAGES[*]} (a few minutes the first time)"
    apt-get update -q >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; die "apt-get update"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${SLURM_PACKAGES[@]}" \
        >>"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; die "apt-get install"; }
}

write_slurm_conf() {
    NODE=$(hostname -s)
    getent hosts "$NODE" >/dev/null || die "the host name $NODE does not resolve (add it to /etc/hosts)"
    local mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 / 3))
    mkdir -p "$WORK/state" "$WORK/spool"
    cat >"$WORK/slurm.conf" <<EOF
ClusterName=cutout-etl-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$WORK/slurm.conf
    NODE_MEMORY_MB=$mem_mb
}

wait_until() { # wait_until SECONDS WHAT COMMAND...: run COMMAND once a second until it succeeds
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "$what: not within $seconds s"
}

munge_answers() { munge -n | unmunge; }

start_munge() {
    if munge_answers >/dev/null 2>&1; then
        log "munged already running: using it"
        return
    fi
    [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    OURS+=("munged:/run/munge/munged.pid")
    wait_until 10 "munge" munge_answers
}

start_slurm() {
    slurmctld -f "$SLURM_CONF"
    wait_until 10 "slurmctld's pid file" test -s "$WORK/slurmctld.pid"
    OURS+=("slurmctld:$WORK/slurmctld.pid")
    slurmd -f "$SLURM_CONF"
    wait_until 10 "slurmd's pid file" test -s "$WORK/slurmd.pid"
    OURS+=("slurmd:$WORK/slurmd.pid")
    wait_until 60 "the node idle in sinfo" node_is_idle
}

node_is_idle() { [ "$(sinfo -h -o %T)" = idle ]; }

no_jobs_left() { [ -z "$(squeue -h -o %i)" ]; }

stop_daemon() { # stop_daemon NAME PIDFILE: only if the pid file names a live process of that name
    local name=$1 pid i
    pid=$(cat "$2" 2>/dev/null) || return 0
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 0
    kill "$pid"
    for ((i = 0; i < 20; i++)); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.5
    done
    log "$name ($pid) did not stop on SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

stop_cluster() { # every job cancelled, then the daemons this run started, last started first
    local i k
    if [[ " ${OURS[*]} " == *" slurmctld:"* ]]; then
        squeue -h -o %i | xargs -r scancel 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do no_jobs_left && break; sleep 1; done
    fi
    for ((k = ${#OURS[@]} - 1; k >= 0; k--)); do
        stop_daemon "${OURS[k]%%:*}" "${OURS[k]#*:}"
    done
    OURS=()
}

OURS=() # name:pidfile of every daemon started here
