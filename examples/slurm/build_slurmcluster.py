"""Run `build` on SLURM through dask-jobqueue, from a login node or a notebook.

    pip install 'cutout-etl[dask]'
    python examples/slurm/build_slurmcluster.py /scratch/me/cutouts/image_table_*.hdf5 -o /scratch/me/dataset.h5

`SLURMCluster` submits batch jobs, each running Dask workers that connect
back to the scheduler started here. This process does the scan and the split
(it reads every input once, so run it where the inputs are mounted); the
workers write the rows into the output, which must be on a file system
every node mounts at the same path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dask_jobqueue import SLURMCluster
from distributed import Client

from cutout_etl import pipeline
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.inputs.scan import ReadOptions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--jobs", type=int, default=2, help="batch jobs (nodes)")
    parser.add_argument("--chunk-rows", type=int, default=512)
    args = parser.parse_args()

    cluster = SLURMCluster(
        queue="normal",  # your partition (#SBATCH -p)
        account="astro",  # your project (#SBATCH -A)
        cores=4,  # threads per job, split over `processes`
        processes=4,  # 4 single-threaded workers per job
        memory="8GB",  # per job: 2 GB a worker
        walltime="02:00:00",
        local_directory="$TMPDIR",  # node-local scratch for Dask's own spill files
        log_directory="dask-logs",
    )
    print(cluster.job_script())  # what is submitted: check it once
    cluster.scale(jobs=args.jobs)
    workers = args.jobs * 4
    with cluster, Client(cluster):
        metadata = pipeline.build(
            args.inputs,
            args.output,
            ReadOptions(chunk_rows=args.chunk_rows),
            cluster=ClusterOptions(scheduler=cluster.scheduler_address, workers=workers),
        )
    print(
        f"{args.output}: {sum(t['rows'] for t in metadata['tables_rows'].values())} rows, digest {metadata['digest']}"
    )


if __name__ == "__main__":
    main()
