"""The barforge command line: text-to-loop generation, export, the OSC bridge and the reference host.

engine's runtime registers ``generate`` and ``continue`` (engine/generate_command.py). Every other
subcommand registers through the ``barforge.commands`` entry-point group (pyproject.toml), each
a function ``register(subparsers)``: ``serve`` in bridge/, ``host`` in plugin_host/, ``export``
in export/, and the training recipes' ``data``, ``train`` and ``eval`` (engine/recipes/), so
the runtime never imports the layers above it nor the recipes.
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: inside a DAW (and on a loaded machine) spinning
# threads steal the cores the audio thread and the other decoding thread need (bench/RESULTS_ar.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from importlib.metadata import entry_points  # noqa: E402

from engine import generate_command  # noqa: E402

# Packages of the training / evaluation recipes, installed by the ``recipes`` extra only.
RECIPE_PACKAGES = {"scipy", "music21", "matplotlib"}


class PlainTextParser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows module docstrings as plain text: reStructuredText's
    literal markup (````x````, ```x```) and literal-block markers (``::``) are dropped."""

    def format_help(self) -> str:
        text = re.sub(r"``([^`]+)``", r"\1", super().format_help())
        text = re.sub(r"`([^`]+)`", r"'\1'", text)
        return re.sub(r"::$", ":", text, flags=re.MULTILINE)


def build_parser() -> argparse.ArgumentParser:
    """The full parser: the runtime's own subcommands plus every registered one. Registering a
    subcommand imports only its argument definitions; its work's modules load when it runs."""
    parser = PlainTextParser(prog="barforge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate_command.register(sub)
    for ep in sorted(entry_points(group="barforge.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; caller mistakes exit 2 with one line."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TimeoutError) as e:
        print(f"barforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:   # a package of an extra that is not installed
        if e.name and isinstance(e, ModuleNotFoundError):
            top = e.name.split(".")[0]
            hint = ("pip install -e '.[recipes]'" if top in RECIPE_PACKAGES
                    else "reinstall barforge: pip install -e .")
            e = ImportError(f"needs the Python package {top!r} ({hint})")
        print(f"barforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # outputs are written atomically: nothing half-written remains
        print(f"barforge {args.command}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run the subcommand; its exit status."""
    return run(build_parser(), argv)


def console_main() -> None:
    """Entry point of the ``barforge`` console script: ``main()``, then the process ends
    without the interpreter's teardown, which after importing torch takes ~0.4 s of a 2-core
    machine. Every output is complete by then (files are renamed into place when written);
    the standard streams and logging are flushed first."""
    try:
        status = main()
    except SystemExit as e:   # argparse's --help and usage errors
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    console_main()
