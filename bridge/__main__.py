"""``python -m bridge serve ...``: the same as ``barforge serve ...``."""
import argparse
import sys

from engine.cli import run  # first: it sets the OpenMP wait policy before torch is imported

from bridge import command  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bridge")
    command.register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    sys.exit(run(parser))
