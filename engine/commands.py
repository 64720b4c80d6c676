"""engine's own subcommands of the ``barforge`` CLI."""
from __future__ import annotations

import argparse

from engine import generate_command
from engine.data import command as data_command
from engine.training import command as train_command
from engine.evaluation import command as eval_command


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``generate``, ``continue``, ``data``, ``train`` and ``eval``."""
    generate_command.register(sub)
    data_command.register(sub)
    train_command.register(sub)
    eval_command.register(sub)
