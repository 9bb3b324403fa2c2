#!/bin/bash
# `make test-slurm`: the examples in examples/slurm run on a real one-node SLURM.
#
# As root on Debian: installs slurmd, slurmctld, slurm-client and munge with
# apt-get (skipped when present), starts a private one-node cluster, then
#   1. submits examples/slurm/build.sbatch twice at once (sbatch --wait): both
#      jobs must succeed, and must have run side by side on the node;
#   2. runs examples/slurm/build_slurmcluster.py (dask-jobqueue submits the workers);
#   3. submits examples/slurm/chain.sh (merge -> split -> stats, afterok) and
#      waits for it; and the same chain on a broken input: merge must fail and
#      split and stats must be cancelled, never run;
# and checks every output with `cutout-etl verify` and that its content digest
# equals a local `cutout-etl build` of the same demo data. Every daemon it
# started is stopped on exit, also on failure. Every wait is bounded.
#
#   VENV=/path/to/venv bash tests/slurm/run.sh     # a venv with cutout-etl[dask] and dask-jobqueue
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
EXAMPLES=$(cd "$HERE/../../examples/slurm" && pwd)
source "$HERE/one_node_slurm.sh"

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts SLURM's daemons)"
command -v apt-get >/dev/null || die "needs Debian's apt-get"
export VENV=${VENV:?set VENV to a virtualenv with cutout-etl[dask] installed}
export PATH=$VENV/bin:$PATH
JOB_MINUTES=5 # every job's --time: SLURM ends a stuck job; the harness's own waits are a little longer

WORK=$(mktemp -d /tmp/cutout-etl-slurm.XXXXXX)
CHILDREN=() # background commands of this script, stopped on exit
on_exit() {
    local status=$? pid
    for pid in "${CHILDREN[@]}"; do kill "$pid" 2>/dev/null || true; done
    stop_cluster
    if [ "$status" = 0 ]; then
        rm -rf "$WORK"
    else
        log "logs and outputs kept in $WORK"
    fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

digest_of() { python -c 'import sys, cutout_etl; print(cutout_etl.open_dataset(sys.argv[1]).metadata["digest"])' "$1"; }

check_dataset() { # check_dataset WHAT PATH: verify passes and the digest is the local build's
    cutout-etl verify "$2" --quiet || die "$1: cutout-etl verify $2"
    local digest
    digest=$(digest_of "$2")
    [ "$digest" = "$REFERENCE_DIGEST" ] || die "$1: digest $digest, the local build's is $REFERENCE_DIGEST"
    log "$1: verify passed, digest equals the local build's"
}

job_field() { # job_field JOBID FIELD: from `scontrol show job` (kept MinJobAge=300 s after the end)
    scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

epoch() { date -d "$1" +%s; }

report_job() { # report_job WHAT JOBID
    local start end
    start=$(job_field "$2" StartTime) end=$(job_field "$2" EndTime)
    log "$1: job $2 $(job_field "$2" JobState), $(($(epoch "$end") - $(epoch "$start"))) s ($start .. $end)"
}

# Submits build.sbatch in the background (`timeout` bounds sbatch --wait, and is this shell's child, so on_exit
# can stop it); its job ID goes to DIR/jobid, its output to DIR/job.log.
start_build() { # start_build DIR
    mkdir -p "$1"
    DATA=$WORK/demo OUT=$1/dataset.h5 DASK_HOST=127.0.0.1 \
        timeout $((JOB_MINUTES * 60 + 60)) sbatch --wait --parsable --nodes=1 --ntasks=1 --ntasks-per-node=1 \
        --cpus-per-task=1 --mem-per-cpu="$JOB_MEMORY_MB" --time="$JOB_MINUTES" --output="$1/job.log" \
        "$EXAMPLES/build.sbatch" >"$1/jobid" &
    CHILDREN+=($!)
}

wait_build() { # wait_build DIR PID WHAT
    wait "$2" || { tail -n 40 "$1/job.log" >&2; die "build.sbatch ($3) failed"; }
    log "build.sbatch ($3): sbatch --wait returned after $((SECONDS - BUILDS_STARTED)) s (it polls at 2, 10, 42 s, ...)"
}

test_two_build_jobs_at_once() {
    BUILDS_STARTED=$SECONDS
    start_build "$WORK/build1"
    start_build "$WORK/build2"
    wait_build "$WORK/build1" "${CHILDREN[-2]}" "first job"
    wait_build "$WORK/build2" "${CHILDREN[-1]}" "second job"
    local a b
    a=$(cat "$WORK/build1/jobid") b=$(cat "$WORK/build2/jobid")
    report_job "build.sbatch" "$a"
    report_job "build.sbatch" "$b"
    (($(epoch "$(job_field "$a" StartTime)") < $(epoch "$(job_field "$b" EndTime)") &&
        $(epoch "$(job_field "$b" StartTime)") < $(epoch "$(job_field "$a" EndTime)"))) ||
        die "the two build.sbatch jobs did not run at the same time"
    check_dataset "build.sbatch job $a" "$WORK/build1/dataset.h5"
    check_dataset "build.sbatch job $b" "$WORK/build2/dataset.h5"
}

test_slurmcluster() {
    mkdir -p "$WORK/jobqueue"
    local started=$SECONDS
    (cd "$WORK/jobqueue" && timeout $((JOB_MINUTES * 60)) python "$EXAMPLES/build_slurmcluster.py" \
        "$WORK"/demo/image_table_*.hdf5 -o "$WORK/jobqueue/dataset.h5" --queue debug --jobs 1 \
        --workers-per-job 1 --memory-per-worker "${JOB_MEMORY_MB}MiB" --walltime "00:0$JOB_MINUTES:00" \
        --host 127.0.0.1 >"$WORK/jobqueue/out.log" 2>&1) ||
        { tail -n 40 "$WORK/jobqueue/out.log" >&2; die "build_slurmcluster.py failed"; }
    log "build_slurmcluster.py: $((SECONDS - started)) s"
    local workers id
    workers=$(scontrol show job -o | sed -n 's/^JobId=\([0-9]*\) JobName=dask-worker .*/\1/p')
    [ -n "$workers" ] || die "build_slurmcluster.py: no dask-worker job was submitted"
    for id in $workers; do report_job "build_slurmcluster.py's worker (cancelled by SLURMCluster on close)" "$id"; done
    check_dataset "build_slurmcluster.py" "$WORK/jobqueue/dataset.h5"
}

run_chain() { # run_chain DATA OUT_DIR: prints the job IDs once all three have left the queue
    mkdir -p "$2"
    local ids
    ids=$(DATA=$1 OUT_DIR=$2 "$EXAMPLES/chain.sh" --mem-per-cpu="$JOB_MEMORY_MB" --time="$JOB_MINUTES")
    local i
    for ((i = 0; i < 3 * JOB_MINUTES * 60 + 60; i++)); do
        [ -z "$(squeue -h -o %i -j "${ids// /,}" 2>/dev/null)" ] && break
        sleep 1
    done
    [ -z "$(squeue -h -o %i -j "${ids// /,}" 2>/dev/null)" ] || die "chain.sh: jobs $ids still queued"
    echo "$ids"
}

test_chain() {
    local ids id names=(merge split stats) k=0
    ids=$(run_chain "$WORK/demo" "$WORK/chain")
    for id in $ids; do
        report_job "chain.sh ${names[k]}" "$id"
        [ "$(job_field "$id" JobState)" = COMPLETED ] ||
            { tail -n 20 "$WORK"/chain/*.log >&2; die "chain.sh: ${names[k]} (job $id) did not complete"; }
        k=$((k + 1))
    done
    check_dataset "chain.sh merge -> split -> stats" "$WORK/chain/dataset.h5"
}

test_chain_stops_at_a_failed_job() {
    mkdir -p "$WORK/broken"
    cp "$WORK"/demo/image_table_*.hdf5 "$WORK/broken/"
    echo "not HDF5" >"$WORK/broken/image_table_qso.hdf5"
    local ids states
    ids=$(run_chain "$WORK/broken" "$WORK/chain-broken")
    states=$(for id in $ids; do job_field "$id" JobState; done | tr '\n' ' ')
    [ "$states" = "FAILED CANCELLED CANCELLED " ] ||
        die "chain.sh on a broken input: states $states, expected merge FAILED, split and stats CANCELLED"
    [ ! -e "$WORK/chain-broken/dataset.h5" ] || die "chain.sh on a broken input wrote a dataset"
    log "chain.sh on a broken input: merge failed, split and stats cancelled"
}

main() {
    local started=$SECONDS
    install_slurm
    write_slurm_conf
    JOB_MEMORY_MB=$((NODE_MEMORY_MB / 4)) # two jobs side by side, with room to spare
    # build.sbatch gives its Dask worker 90 % of this; a worker needs ~200 MB, and Dask pauses one at 80 % of its limit
    ((JOB_MEMORY_MB >= 512)) || die "$JOB_MEMORY_MB MB a job is too little: the SLURM test needs 6 GB of memory"
    start_munge
    start_slurm
    log "one-node cluster up: $NODE, $(nproc) CPUs, ${NODE_MEMORY_MB} MB ($((SECONDS - started)) s)"
    cutout-etl demo-data "$WORK/demo" --rows 300 --seed 0 --quiet
    cutout-etl build "$WORK"/demo/image_table_*.hdf5 -o "$WORK/local.h5" --quiet
    REFERENCE_DIGEST=$(digest_of "$WORK/local.h5")
    cd "$WORK"
    test_two_build_jobs_at_once
    test_slurmcluster
    test_chain
    test_chain_stops_at_a_failed_job
    log "passed in $((SECONDS - started)) s"
}

main
