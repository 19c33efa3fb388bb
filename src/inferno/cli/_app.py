"""The Typer app, its consoles and the entry point that turns user mistakes into one line and exit 2."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from inferno.errors import InfernoError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Make a trained model fast and dependable in production, measured on your hardware.")
err = Console(stderr=True)
# Not a terminal (make, CI, a pipe): rich would assume 80 columns and fold the report table.
out = Console(width=None if sys.stdout.isatty() else 160)
state: dict[str, bool] = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs "
                                                               "(also accepted after the command).")] = False) -> None:
    debug = debug or state["debug"]  # main() may have taken it from after the subcommand
    state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def new_progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=err, transient=True)


def _take_debug(argv: list[str]) -> list[str]:
    """``--debug`` anywhere before ``--`` (README shows it after the subcommand; click only
    takes a group's options before it): set the flag and drop it from the arguments."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[:end]:
        return argv
    _root(debug=True)
    return [a for i, a in enumerate(argv) if not (a == "--debug" and i < end)]


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes are one line on stderr and exit code 2."""
    state["debug"] = False
    argv = _take_debug(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=argv, standalone_mode=False)
    except InfernoError as exc:
        if state["debug"]:
            err.print_exception()
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        if state["debug"]:
            raise
        err.print(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                  markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
