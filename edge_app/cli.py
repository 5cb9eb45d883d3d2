"""``edge-foct``: the command line. Each command lives in its own module; this file registers them.

Errors a user can fix (EdgeFoctError, and click's bad option values) print one line and exit with
status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys

import click

from edge_foct import __version__
from edge_foct.runtime.errors import EdgeFoctError


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
    from . import bench_cmd, build_engines_cmd, demo_cmd, eval_cmd, export_cmd, fit_cmd, predict_cmd, prepare_cmd
    from . import doctor_cmd, serve_cmd, watch_cmd

    for module in (fit_cmd, predict_cmd, demo_cmd, prepare_cmd, eval_cmd, bench_cmd, export_cmd,
                   build_engines_cmd, serve_cmd, watch_cmd, doctor_cmd):
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
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
