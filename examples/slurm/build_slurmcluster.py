"""Run `build` on SLURM through dask-jobqueue, from a login node or a notebook.

    pip install 'cutout-etl[dask]'
    python examples/slurm/build_slurmcluster.py /scratch/me/cutouts/image_table_*.hdf5 -o /scratch/me/dataset.h5 \\
        --queue normal --jobs 2 --workers-per-job 4

`SLURMCluster` submits batch jobs, each running Dask workers that connect
back to the scheduler started here. This process does the scan and the split
(it reads every input once, so run it where the inputs are mounted); the
workers write the rows into the output, which must be on a file system
every node mounts at the same path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import dask.utils
from dask_jobqueue import SLURMCluster
from distributed import Client

from cutout_etl import pipeline
from cutout_etl.execution.dask_cluster import ClusterOptions
from cutout_etl.inputs.scan import ReadOptions


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--jobs", type=int, default=2, help="batch jobs (nodes)")
    parser.add_argument("--workers-per-job", type=int, default=4, help="single-threaded Dask workers per job")
    parser.add_argument("--memory-per-worker", default="2GB", help="a worker needs ~200 MB + a few blocks")
    parser.add_argument("--queue", default="normal", help="your partition (#SBATCH -p)")
    parser.add_argument("--account", default=None, help="your project (#SBATCH -A), if your site needs one")
    parser.add_argument("--walltime", default="02:00:00")
    parser.add_argument(
        "--host",
        default=None,
        help="the address the scheduler (here) and the workers listen on, e.g. 127.0.0.1 when the workers run "
        "on this machine; default: Dask's (every interface, advertised as this machine's address)",
    )
    parser.add_argument("--chunk-rows", type=int, default=512)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    memory = dask.utils.parse_bytes(args.memory_per_worker) * args.workers_per_job
    cluster = SLURMCluster(
        queue=args.queue,
        account=args.account,
        cores=args.workers_per_job,  # threads per job, split over `processes`: one thread a worker
        processes=args.workers_per_job,
        memory=dask.utils.format_bytes(memory),  # per job
        walltime=args.walltime,
        local_directory="$TMPDIR",  # node-local scratch for Dask's own spill files
        log_directory="dask-logs",
        scheduler_options={"host": args.host} if args.host else {},
        worker_extra_args=["--host", args.host] if args.host else [],
    )
    print(cluster.job_script())  # what is submitted: check it once
    cluster.scale(jobs=args.jobs)
    with cluster, Client(cluster):
        metadata = pipeline.build(
            args.inputs,
            args.output,
            ReadOptions(chunk_rows=args.chunk_rows),
            cluster=ClusterOptions(scheduler=cluster.scheduler_address, workers=args.jobs * args.workers_per_job),
        )
    print(
        f"{args.output}: {sum(t['rows'] for t in metadata['tables_rows'].values())} rows, digest {metadata['digest']}"
    )


if __name__ == "__main__":
    main()
