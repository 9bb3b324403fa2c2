"""Which file a path names: the identity taken when it was opened, and the SHA-256 of the file read."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import h5py

from ..errors import InputChangedError


def host_name() -> str:
    """This machine's name: identities and temporary names say which host they are from."""
    return socket.gethostname()


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named when it was opened: the one place that says whether it is still that file.

    Pass 1 records the identity of the file it actually read; every later open
    (pass 2, Dask tasks, the SHA-256 hasher, the duplicate-ID image re-read) and
    the last check before the output is sealed compare against it, so a file
    renamed over an input (another inode) or rewritten in place (another size
    or mtime) stops the run instead of mixing two files' rows. Device numbers
    are compared only on the same host: a shared file system may number its
    device differently on each node of a cluster.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    host: str = ""

    @classmethod
    def of_stat(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, host_name())

    @classmethod
    def of_fd(cls, fd: int) -> FileIdentity:
        return cls.of_stat(os.fstat(fd))

    @classmethod
    def of_path(cls, path: Path) -> FileIdentity:
        return cls.of_stat(os.stat(path))

    @classmethod
    def of_h5(cls, f: h5py.File) -> FileIdentity:
        """The file h5py holds open (the default sec2 driver's descriptor)."""
        return cls.of_fd(f.id.get_vfd_handle())

    def same_file(self, other: FileIdentity | None) -> bool:
        if other is None:
            return False
        same_dev = self.dev == other.dev or self.host != other.host
        return same_dev and (self.ino, self.size, self.mtime_ns) == (other.ino, other.size, other.mtime_ns)

    def check(self, path: Path, now: FileIdentity | None) -> None:
        """Raise InputChangedError unless `now` is the file this identity was taken from."""
        if not self.same_file(now):
            raise InputChangedError(f"{path}: changed while it was being read (replaced or rewritten); nothing written")

    def check_fd(self, path: Path, fd: int) -> None:
        self.check(path, FileIdentity.of_fd(fd))

    def check_path(self, path: Path) -> None:
        """The file the path names now (a missing file counts as changed)."""
        try:
            now = FileIdentity.of_path(path)
        except OSError:
            now = None
        self.check(path, now)


def sha256_file(path: Path, block: int = 1 << 22, stop: threading.Event | None = None) -> tuple[str, FileIdentity]:
    """SHA-256 of a file and the identity of the file hashed; gives up (returns "") as soon as `stop` is set.

    The identity is taken from the descriptor hashed, so the caller can check
    that the digest is of the file the run read; a file rewritten while it is
    hashed raises InputChangedError. Reads into one reused buffer: a fresh
    4 MiB object per read costs page faults.
    """
    digest = hashlib.sha256()
    buffer = bytearray(block)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        identity = FileIdentity.of_fd(fh.fileno())
        while size := fh.readinto(buffer):
            if stop is not None and stop.is_set():
                return "", identity
            digest.update(view[:size])
        identity.check_fd(path, fh.fileno())
    return digest.hexdigest(), identity


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
