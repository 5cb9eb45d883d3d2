"""``edge-foct``: the command line. Each command lives in its own module under ``commands/``; this file registers them.

Errors a user can fix (EdgeFoctError, and click's bad option values) print one line and exit with
status 2, never a traceback.
"""

from __future__ import annotations

import faulthandler
import logging
import sys

import click
from edge_foct.runtime.errors import EdgeFoctError

from edge_foct import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-foct")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv for debug).")
def cli(verbose: int) -> None:
    """Few-shot industrial anomaly detection for the edge (FOCT, PatchCore+, PatchCore)."""
    level = logging.WARNING - 10 * verbose if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("PIL", "matplotlib", "numba", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _register() -> None:
    from .commands import (
        bench,
        build_engines,
        demo,
        doctor,
        eval,
        export,
        fit,
        predict,
        prepare_backbone,
        serve,
        watch,
    )

    for module in (fit, predict, demo, prepare_backbone, eval, bench, export, build_engines, serve, watch, doctor):
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    # a crash in a native library (ONNX Runtime, OpenVINO, OpenCV) prints the Python stack; called
    # in-process (pytest: its own handler is on, and a captured sys.stderr has no file descriptor) the
    # caller's handler stays
    if not faulthandler.is_enabled() and sys.__stderr__ is not None:
        faulthandler.enable(sys.__stderr__)
    try:
        cli.main(args=argv, prog_name="edge-foct", standalone_mode=False)
    except EdgeFoctError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # a bad option value: one line too, naming the help to read
        where = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        click.echo(f"error: {e.format_message()}{where}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
