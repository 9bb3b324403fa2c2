"""What `ingest` is asked to do: bands, size, matching and the policies (light: the CLI imports it at start-up)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..choices import Choice
from ..errors import UsageError
from ..schema import Columns


@dataclass(frozen=True)
class Policies:
    """What happens to a cutout of the wrong size, and to a band without a file."""

    smaller: str  # "pad" (NaN where the tile ended) or "drop"
    larger: str  # "crop" (around the object) or "drop"
    missing: str  # "nan" or "drop"


class SmallerPolicy(Choice):
    PAD = "pad"  # NaN where the tile ended, placed by the WCS
    DROP = "drop"


class LargerPolicy(Choice):
    CROP = "crop"  # the (H, W) box around the object, placed by the WCS
    DROP = "drop"


class MissingPolicy(Choice):
    DROP = "drop"
    NAN = "nan"


@dataclass
class IngestOptions:
    """Bands, cutout size, matching and the policies; the defaults are the CLI's."""

    bands: Sequence[str] = ("u", "g", "r", "i")
    columns: Columns = field(default_factory=Columns)
    table_path: str | None = None  # the catalogue's table, for an HDF5 file holding several
    size: int = 36  # pixels, square
    match_tolerance: float = 0.1  # arcsec
    smaller: SmallerPolicy | str = SmallerPolicy.PAD
    larger: LargerPolicy | str = LargerPolicy.CROP
    missing_band: MissingPolicy | str = MissingPolicy.DROP
    chunk_rows: int = 128
    overwrite: bool = False

    def policies(self) -> Policies:
        return Policies(
            SmallerPolicy.parse(self.smaller, "--smaller").value,
            LargerPolicy.parse(self.larger, "--larger").value,
            MissingPolicy.parse(self.missing_band, "--missing-band").value,
        )

    def check(self) -> None:
        """Usage errors before any work."""
        self.policies()
        if not self.bands or any(not re.fullmatch(r"[A-Za-z0-9_.-]+", b) for b in self.bands):
            raise UsageError(
                f"--bands: give band names separated by commas, e.g. u,g,r,i (got {','.join(self.bands)!r})"
            )
        if len(set(self.bands)) != len(self.bands):
            raise UsageError(f"--bands: a band is named twice ({','.join(self.bands)})")
        if self.size < 1 or self.chunk_rows < 1:
            raise UsageError("--size and --chunk-rows: must be at least 1")
        if not self.match_tolerance >= 0:
            raise UsageError(f"--match-tolerance: must be >= 0 arcsec (got {self.match_tolerance})")
