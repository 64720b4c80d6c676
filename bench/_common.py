"""Helpers the benchmark scripts share."""
from __future__ import annotations

from pathlib import Path


def append_results(out: Path, title: str, text: str) -> None:
    """Print ``text`` and append it to the results file ``out`` (created with the heading
    ``# title`` if it does not exist yet)."""
    print(text)
    if not out.exists():
        out.write_text(f"# {title}\n")
    with out.open("a") as f:
        f.write(text)
