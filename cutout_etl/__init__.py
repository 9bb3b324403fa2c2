"""cutout-etl: astronomers' HDF5 cutout tables to machine-learning-ready datasets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cutout-etl")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

from .dataset import Dataset, Split, open_dataset
from .errors import CutoutEtlError

__all__ = ["CutoutEtlError", "Dataset", "Split", "__version__", "open_dataset"]
