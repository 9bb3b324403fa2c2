"""How the command line fails: one line on stderr (and with --json one document on stdout), then an exit code.

Also the parser of finite numbers, whose errors go the same way.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import typer
from typer._click.exceptions import BadParameter, MissingParameter, NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from .render import err, one_line


def fail(line: str, exit_code: int) -> NoReturn:
    """The end of every failed command: one line on stderr, and with --json one document on stdout."""
    line = one_line(line)
    err.print(line, markup=False)
    ctx = get_current_context(silent=True)
    if ctx is not None and ctx.params.get("json_out"):
        print_failure_json(line, exit_code)
    raise typer.Exit(exit_code)


def print_failure_json(line: str, exit_code: int) -> None:
    print(json.dumps({"ok": False, "error": line.removeprefix("error: "), "exit_code": exit_code}, indent=2))


class OneLineUsageErrors(TyperGroup):
    """Click's usage errors (bad choice, bad number, missing argument) as one line, exit 2, like every other error."""

    _args: tuple[str, ...] = ()

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        self._args = tuple(sys.argv[1:] if args is None else args)
        return super().main(args, *rest, **kwargs)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with self._one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with self._one_line():
            return super().invoke(ctx)

    @contextlib.contextmanager
    def _one_line(self) -> Iterator[None]:
        try:
            yield
        except NoArgsIsHelpError:
            raise  # shows the help
        except ClickUsageError as exc:
            line = one_line(f"error: {_usage_message(exc)}")
            err.print(line, markup=False)
            if "--json" in self._args:
                print_failure_json(line, exc.exit_code)
            raise typer.Exit(exc.exit_code) from None


def _usage_message(exc: ClickUsageError) -> str:
    """`--format: 'csv' is not one of 'hdf5', 'parquet'`: the option, then the problem."""
    if isinstance(exc, BadParameter) and not isinstance(exc, MissingParameter) and (exc.param_hint or exc.param):
        hint = exc.param_hint or "/".join(exc.param.opts)  # type: ignore[union-attr]
        hint = hint if isinstance(hint, str) else "/".join(hint)
        return f"{hint}: {exc.message.removeprefix('Value error, ')}"
    return exc.format_message()


def finite_float(minimum: float) -> Callable[[str], float]:
    """An option parser: a finite number >= minimum (NaN or inf would reach the metadata, which is JSON)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise BadParameter(f"expected a number (got {text!r})") from None
        if not math.isfinite(value):
            raise BadParameter(f"expected a finite number (got {text!r})")
        if value < minimum:
            raise BadParameter(f"expected a number >= {minimum:g} (got {text!r})")
        return value

    return parse


def finite_floats(text: str, option: str) -> list[float]:
    """A comma-separated list of finite numbers >= 0, e.g. --fractions 0.7,0.15,0.15."""
    parse = finite_float(0)
    try:
        return [parse(v) for v in text.split(",")]
    except BadParameter as exc:
        raise BadParameter(f"{exc.message} in {text!r}", param_hint=option) from None
