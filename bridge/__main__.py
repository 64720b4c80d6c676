"""``python -m bridge serve ...``: the same as ``barforge serve ...``."""
import argparse
import sys

from bridge import command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command.register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"barforge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
