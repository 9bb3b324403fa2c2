"""Where pass 2 (reading the kept rows and writing the output tables) runs: here or on Dask.

`local` is the one place that decides: worker threads in this process, or tasks on a Dask cluster
(`dask_cluster`, chosen by `ClusterOptions`). Both take the plan from `steps`, read rows through
`inputs`, and write blocks through `formats`; the result is the same either way.
"""

from .dask_cluster import ClusterOptions

__all__ = ["ClusterOptions"]
