"""Every ``barforge`` command README.md shows runs as written.

Each one is parsed by the real command-line parser (a renamed flag or a removed option fails
here); the ones a fresh machine can run offline in seconds run for real, in a subprocess, from a
scratch folder: README's first set-up command (the default model, 4 bars at 90 BPM), the debug
model's MAGNeT line, and ``continue`` on the loop it wrote.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import soundfile as sf

from engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    """The ``barforge ...`` commands of README's bash blocks (continuations joined, comments and
    a leading ``pip install ... &&`` dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].split("&&")[-1].strip()
            if line.startswith("barforge "):
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_readme_shows_the_main_commands() -> None:
    verbs = {shlex.split(c)[1] for c in COMMANDS}
    assert {"generate", "continue", "serve", "host", "export", "data", "train", "eval"} <= verbs


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command: str) -> None:
    try:
        build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as e:
        pytest.fail(f"README command does not parse (exit {e.code}): {command}")


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    return subprocess.run([sys.executable, "-m", "engine.cli", *argv[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _the(pattern: str) -> str:
    found = [c for c in COMMANDS if re.search(pattern, c)]
    assert len(found) == 1, f"README should show one command matching {pattern!r}, found {found}"
    return found[0]


def test_readme_first_setup_command_renders_four_exact_bars(tmp_path: Path) -> None:
    first_setup = README.split("```bash\n", 1)[1].splitlines()[0]
    command = first_setup.split("&&")[-1].strip()
    assert "--model default" in command and "--bars 4" in command and "--bpm 90" in command
    result = _run(command, tmp_path)
    assert result.returncode == 0, result.stderr
    info = sf.info(str(tmp_path / "loop.wav"))
    assert info.frames == round(Fraction(4 * 4 * 60 * info.samplerate, 90))
    # clean output: our own progress bar at most, no third-party bars or warnings
    assert "Loading weights" not in result.stderr and "Warning" not in result.stderr

    # README's continue line works on the loop just written, with the default model's defaults
    result = _run(_the(r"^barforge continue "), tmp_path)
    assert result.returncode == 0, result.stderr
    more = sf.info(str(tmp_path / "more.wav"))
    assert more.samplerate == info.samplerate and more.frames > 4 * info.samplerate


def test_readme_debug_model_line_renders(tmp_path: Path) -> None:
    result = _run(_the(r"--model debug-magnet --mode magnet"), tmp_path)
    assert result.returncode == 0, result.stderr
    info = sf.info(str(tmp_path / "m.wav"))
    assert info.frames == round(Fraction(2 * 4 * 60 * info.samplerate, 124))
