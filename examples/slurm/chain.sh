#!/bin/bash
# merge -> split -> stats as three dependent batch jobs: each starts only when the
# one before it succeeded (--dependency=afterok), and is cancelled if that one
# failed (--kill-on-invalid-dep=yes), so nothing waits for ever behind a failure.
#
#   DATA=/scratch/me/cutouts OUT_DIR=/scratch/me/run1 examples/slurm/chain.sh [sbatch options...]
#
# Run it where sbatch works (a login node). Extra arguments go to every sbatch,
# e.g. --partition=short --time=00:30:00. Writes OUT_DIR/merged.h5, then
# OUT_DIR/dataset.h5 (the split, with the training statistics added by stats).
# Prints the three job IDs (`squeue -j`, `scontrol show job` follow them).
set -euo pipefail

DATA=${DATA:?set DATA to the directory of the class files}
OUT_DIR=${OUT_DIR:?set OUT_DIR to the directory to write merged.h5 and dataset.h5 in}
STEP=$(dirname "$0")/step.sbatch

submit() { # submit NAME DEPENDENCY ARGS...: prints the job ID
    local name=$1 after=$2
    shift 2
    sbatch --parsable --job-name="cutout-etl-$name" --output="$OUT_DIR/cutout-etl-%x-%j.log" \
        ${after:+--dependency=afterok:$after --kill-on-invalid-dep=yes} "${SBATCH_EXTRA[@]}" "$STEP" "$@"
}

SBATCH_EXTRA=("$@")
merge=$(submit merge "" merge "$DATA"/image_table_*.hdf5 -o "$OUT_DIR/merged.h5" --overwrite)
split=$(submit split "$merge" split "$OUT_DIR/merged.h5" -o "$OUT_DIR/dataset.h5" --overwrite)
stats=$(submit stats "$split" stats "$OUT_DIR/dataset.h5")
echo "$merge $split $stats"
