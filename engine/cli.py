"""The barforge command line: text-to-loop generation, export, the OSC bridge and the reference host.

Subcommands that belong to other layers (``serve`` in bridge/, ``host`` in plugin_host/,
``export`` in export/) register through the ``barforge.commands`` entry-point group, each a
function ``register(subparsers)``, so engine/ never imports the layers above it.
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: inside a DAW (and on a loaded machine) spinning
# threads steal the cores the audio thread and the other decoding thread need (bench/RESULTS_ar.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
from importlib.metadata import entry_points  # noqa: E402

from engine import commands as engine_commands  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The full parser: engine's own subcommands plus every registered plugin."""
    parser = argparse.ArgumentParser(prog="barforge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    engine_commands.register(sub)
    for ep in sorted(entry_points(group="barforge.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; caller mistakes exit 2 with one line."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"barforge {args.command}: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``barforge`` console script."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
