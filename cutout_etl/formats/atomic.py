"""Writing outputs atomically, whatever their format.

Outputs are written to a temporary file (or directory) beside the target and
renamed into place only when complete, so a target path either does not
exist or holds a finished output. What each format writes is in `formats/`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .. import interrupts
from ..errors import ForeignOutputError, OutputAppearedError, OutputExistsError, OutputWriteError
from ..inputs.file_identity import host_name

_TMP_MARK = ".tmp-"
Guard = Callable[[Path], None]  # raises ForeignOutputError when an existing target may not be replaced


def _host() -> str:
    """This machine's name as it appears in temporary names (no '/', no whitespace)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", host_name()) or "localhost"


def temp_path_for(target: Path) -> Path:
    """`.<target>.tmp-<host>-<pid>-<random>`: the host and PID say whose it is on a shared file system."""
    return target.with_name(f".{target.name}{_TMP_MARK}{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


def _temp_owner(name: str, prefix: str) -> tuple[str, int] | None:
    """(host, pid) of a temporary name, parsed from the right (host names may hold '-'); None if not ours."""
    parts = name[len(prefix) :].rsplit("-", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not re.fullmatch(r"[0-9a-f]+", parts[2]):
        return None
    return parts[0], int(parts[1])


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete temporaries left beside `target` by killed runs of this host.

    A temporary of another host is never touched (its PID means nothing
    here), nor one whose process is still alive.
    """
    prefix, host = f".{target.name}{_TMP_MARK}", _host()
    removed: list[Path] = []
    try:
        with os.scandir(target.parent) as listing:
            names = [entry.name for entry in listing if entry.name.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        owner = _temp_owner(name, prefix)
        if owner is not None and owner[0] == host and not _process_alive(owner[1]):
            _remove(target.parent / name)
            removed.append(target.parent / name)
    return removed


def _remove(path: Path) -> None:
    """Remove a temporary; a cleanup never raises, so it cannot hide the error (or signal) that led to it."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def check_writable(target: Path) -> None:
    """Claim and release a temporary beside `target`: OutputWriteError now, not after the work, if it cannot be.

    Dead runs' temporaries are removed first, so a run never holds its own temporary beside theirs.
    """
    remove_stale_temps(target)
    tmp = temp_path_for(target)
    try:
        _claim(tmp, target, directory=False)
    finally:
        _remove(tmp)  # also when a signal lands between creating it and returning


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- what --overwrite may replace


def written_by_cutout_etl(target: Path) -> None:
    """Allow replacing only a cutout-etl output: one of the registered formats' datasets, and nothing else."""
    from .. import formats  # the formats write through atomic_output

    problem = "is a symbolic link" if target.is_symlink() else formats.foreign_problem(target)
    if problem:
        raise ForeignOutputError(
            f"{target}: {problem}; --overwrite replaces only what cutout-etl wrote, nothing was touched"
        )


def _check_not_holding(target: Path, protected: Sequence[Path]) -> None:
    """Refuse a target that is, or is a parent of, an input or the working directory."""
    if target.name in ("", ".", ".."):
        raise ForeignOutputError(
            f"{target}: names the current or a parent directory; name the output file or directory"
        )
    where = target.resolve()
    for path in protected:
        resolved = Path(path).resolve()
        if where == resolved or where in resolved.parents:
            raise ForeignOutputError(f"{target}: holds the input {path}; refusing to replace it")
    cwd = Path.cwd().resolve()
    if where == cwd or where in cwd.parents:
        raise ForeignOutputError(f"{target}: is the working directory or one of its parents; refusing to replace it")


def check_target(
    target: Path,
    overwrite: bool,
    directory: bool = False,
    may_replace: Guard = written_by_cutout_etl,
    protected: Sequence[Path] = (),
) -> None:
    """Refuse an existing output without --overwrite, one we may not replace, or an unwritable directory.

    `may_replace(target)` raises when an existing target is not the caller's
    kind of output (default: a cutout-etl dataset); `protected` are inputs the
    target must neither be nor hold.
    """
    _check_not_holding(target, protected)
    if os.path.lexists(target):
        if not overwrite:
            raise OutputExistsError(f"{target}: output exists; use --overwrite to replace it")
        if target.is_dir() != directory:
            kind, wanted = ("a directory", "a file") if target.is_dir() else ("a file", "a directory")
            raise OutputExistsError(f"{target}: is {kind}; this output format writes {wanted}")
        may_replace(target)
    if not target.parent.is_dir():
        raise OutputWriteError(f"{target}: output directory {target.parent} does not exist")


@contextmanager
def atomic_output(
    target: Path,
    overwrite: bool,
    fsync: bool = False,
    directory: bool = False,
    may_replace: Guard = written_by_cutout_etl,
    protected: Sequence[Path] = (),
) -> Iterator[Path]:
    """Yield a temporary path (a file, or a directory) beside `target`; rename it into place on success.

    On any failure, Ctrl-C included, the temporary output is removed and an
    existing target is left untouched. The target is checked before any
    work and again just before the rename (`check_target`): without
    `overwrite`, an output that appeared meanwhile is never replaced
    (OutputAppearedError). The rename alone protects against a killed
    process; `fsync` also flushes the data, then the directory entry, to
    disk, which protects against a power cut at the price of a full writeback.
    """
    check_target(target, overwrite, directory, may_replace, protected)
    remove_stale_temps(target)
    tmp = temp_path_for(target)
    try:
        _claim(tmp, target, directory)
        yield tmp
        if fsync:
            _fsync_tree(tmp)
        replace = _check_again(target, overwrite, directory, may_replace, protected)
        interrupts.check()  # the last chance to stop: an interrupt swallowed by a GC callback must not publish
        _install(tmp, target, replace)
        if fsync:
            _fsync(target.parent)
    except OSError as exc:
        raise OutputWriteError(f"{target}: cannot write output ({_os_reason(exc)})") from exc
    finally:
        _remove(tmp)


def _check_again(target: Path, overwrite: bool, directory: bool, may_replace: Guard, protected: Sequence[Path]) -> bool:
    """Whether the final step replaces an existing target; raise if it may not."""
    if not os.path.lexists(target):
        return False
    if not overwrite:
        raise _appeared(target)
    check_target(target, overwrite, directory, may_replace, protected)
    return True


def _install(tmp: Path, target: Path, replace: bool) -> None:
    """Rename into place: replacing the checked target, or only if nothing is there."""
    if not replace:
        _rename_noreplace(tmp, target)
    elif tmp.is_dir():
        _replace_directory(tmp, target)
    else:
        os.replace(tmp, target)


def _appeared(target: Path) -> OutputAppearedError:
    return OutputAppearedError(
        f"{target}: appeared while running; nothing replaced (use --overwrite to replace an output cutout-etl wrote)"
    )


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """Linux renameat2(2); OSError(ENOSYS) where the C library lacks it."""
    function = getattr(_LIBC, "renameat2", None)
    if function is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    at_fdcwd = -100
    if function(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(src), None, str(dst))


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if hasattr(libc, "renameat2"):
        libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        libc.renameat2.restype = ctypes.c_int
    return libc


_LIBC = _load_libc()


def _rename_noreplace(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target` only if nothing is at `target`; else OutputAppearedError.

    renameat2(RENAME_NOREPLACE) where the kernel and file system have it.
    Otherwise a file is hard-linked (link(2) never replaces, NFS included)
    and the temporary unlinked by the caller; a directory (or a file on a
    file system without hard links) is renamed after a check: rename(2)
    fails on a non-empty directory, so for a directory only an empty one
    created in between could be replaced.
    """
    try:
        _renameat2(tmp, target, _RENAME_NOREPLACE)
        return
    except FileExistsError:
        raise _appeared(target) from None
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    if not tmp.is_dir():
        try:
            os.link(tmp, target)
            return
        except FileExistsError:
            raise _appeared(target) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
    _rename_after_check(tmp, target)  # no hard links either: the narrowest race left


def _rename_after_check(tmp: Path, target: Path) -> None:
    if os.path.lexists(target):
        raise _appeared(target)
    try:
        os.rename(tmp, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise _appeared(target) from None
        raise


def _replace_directory(tmp: Path, target: Path) -> None:
    """Swap the new directory in atomically (RENAME_EXCHANGE leaves the old one at `tmp`), or move the old aside."""
    try:
        _renameat2(tmp, target, _RENAME_EXCHANGE)
        return
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    aside = temp_path_for(target)
    os.replace(target, aside)
    try:
        _rename_noreplace(tmp, target)
    except BaseException:
        if not os.path.lexists(target):
            os.rename(aside, target)  # put the old output back
        raise
    _remove(aside)


def _claim(tmp: Path, target: Path, directory: bool) -> None:
    """Claim the temporary name now, so an unwritable directory fails before any work."""
    try:
        if directory:
            tmp.mkdir()
        else:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except OSError as exc:
        raise OutputWriteError(f"{target}: cannot write in {target.parent} ({_os_reason(exc)})") from exc


def _fsync_tree(path: Path) -> None:
    """fsync every file and directory under `path`, deepest first, then `path` itself."""
    if path.is_dir():
        for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            _fsync(child)
    _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EFBIG:
        return "file size limit exceeded"
    return exc.strerror or str(exc).splitlines()[0]
