"""SIGINT, SIGTERM and SIGHUP stop a run the same way: one `Interrupted`, raised in the main thread.

The handler raises once and remembers the signal. Later signals are only
recorded, so they cannot abort the cleanup the first one started. Python
swallows an exception raised inside a garbage-collector or weakref callback
(and reports it through `sys.unraisablehook`), so long-running code calls
`check()` often (every progress call, and just before an output is renamed
into place) to raise the remembered interrupt again.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_pending: Interrupted | None = None


def check() -> None:
    """Raise the interrupt again if one arrived (the first raise may have been swallowed)."""
    if _pending is not None:
        raise Interrupted(_pending.signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, a stop signal raises `Interrupted`; previous handlers and hooks come back after."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can install handlers; a library caller keeps its own
        return
    _pending = None
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(previous_hook)
    try:
        yield
    except Exception as exc:
        if _pending is not None:  # the signal broke something on its way out (a lock being released, a callback)
            raise Interrupted(_pending.signum) from exc
        raise
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be restored from here
                signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _pending = None


def _on_signal(signum: int, frame: object) -> None:
    global _pending
    if _pending is not None:
        return  # already stopping: let the cleanup finish
    _pending = Interrupted(signum)
    raise Interrupted(signum)


def _unraisable_hook(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """Swallowed interrupts are recorded silently (`check()` raises them again); anything else goes to `previous`."""

    def hook(unraisable: Any) -> None:
        global _pending
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            if _pending is None:
                value = unraisable.exc_value
                _pending = value if isinstance(value, Interrupted) else Interrupted(signal.SIGINT)
            return
        previous(unraisable)

    return hook
