"""``python -m bridge serve ...``: the same as ``barforge serve ...``."""
import argparse
import sys

from bridge import command
from engine.cli import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bridge")
    command.register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    sys.exit(run(parser))
