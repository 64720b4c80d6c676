"""Validation built into export: ``onnx.checker``, then each graph run in onnxruntime against the
PyTorch module on random inputs, with the max error printed and a failure above tolerance.

Tolerances differ by variant: fp32 graphs must match to float rounding; fp16, int8 and int4 graphs are
compared by their error relative to the reference's largest magnitude (an absolute bound means
nothing for logits of arbitrary scale). Integer outputs (codec codes) must agree on at least
``min_int_agreement`` of their entries (a latent that lands on a Voronoi boundary may pick the
neighbouring code after float reordering).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from engine.backends.onnx_runtime import make_session


@dataclass(frozen=True)
class Tolerance:
    """``abs``: absolute bound; ``rel``: bound on max|err| / max|ref| (either may pass)."""

    abs: float
    rel: float
    min_int_agreement: float = 0.999


TOLERANCES = {
    "fp32": Tolerance(abs=2e-4, rel=1e-4),
    "fp16": Tolerance(abs=5e-2, rel=2e-2),
    "int8": Tolerance(abs=0.25, rel=0.15, min_int_agreement=0.99),
    # 4-bit error accumulates over depth: at musicgen-small shape (24 layers, random weights)
    # the deepest layers' present K/V reach 0.25 of their largest value; a broken graph is > 1
    "int4": Tolerance(abs=0.5, rel=0.4, min_int_agreement=0.99),
}


@dataclass(frozen=True)
class OutputReport:
    name: str
    max_abs_err: float
    max_rel_err: float        # max|err| / max|ref|; for integer outputs: 1 - agreement
    ok: bool


def check_model(path: Path) -> None:
    """``onnx.checker`` with full check (shape inference included); by path for >2 GB files."""
    onnx.checker.check_model(str(path), full_check=True)


def compare_outputs(names: list[str], got: list[np.ndarray], ref: list[np.ndarray],
                    tol: Tolerance) -> list[OutputReport]:
    """Per-output error reports of onnxruntime ``got`` against torch ``ref``."""
    reports = []
    for name, g, r in zip(names, got, ref):
        if g.shape != r.shape:
            raise ValueError(f"output {name}: onnxruntime gave shape {g.shape}, torch {r.shape}")
        if np.issubdtype(r.dtype, np.integer):
            disagree = float(np.mean(g != r)) if r.size else 0.0
            reports.append(OutputReport(name, float(np.abs(g - r).max(initial=0)), disagree,
                                        disagree <= 1 - tol.min_int_agreement))
            continue
        err = float(np.abs(g.astype(np.float64) - r).max(initial=0.0))
        scale = float(np.abs(r).max(initial=0.0))
        rel = err / scale if scale > 0 else err
        reports.append(OutputReport(name, err, rel, err <= tol.abs or rel <= tol.rel))
    return reports


def validate_graph(path: Path, reference: Callable[..., list[torch.Tensor]],
                   inputs: dict[str, np.ndarray], variant: str = "fp32",
                   provider: str = "cpu", log: Callable[[str], None] = print,
                   ) -> list[OutputReport]:
    """Check ``path``, run it in onnxruntime on ``inputs`` and compare with ``reference``.

    ``reference(**torch_inputs)`` returns the torch outputs in the graph's output order.
    Raises ValueError naming the graph and output when an error is above the variant's tolerance.
    """
    tol = TOLERANCES[variant]
    check_model(path)
    session = make_session(path, provider, threads=1)
    names = [o.name for o in session.get_outputs()]
    got = session.run(None, inputs)
    with torch.no_grad():
        ref = [t.detach().cpu().numpy() for t in reference(
            **{k: torch.from_numpy(v) for k, v in inputs.items()})]
    reports = compare_outputs(names, got, ref, tol)
    worst = max(reports, key=lambda r: r.max_rel_err)
    log(f"  {path.name} [{variant}]: max abs err {max(r.max_abs_err for r in reports):.3g}, "
        f"max rel err {worst.max_rel_err:.3g} ({worst.name})")
    bad = [r for r in reports if not r.ok]
    if bad:
        details = ", ".join(f"{r.name}: abs {r.max_abs_err:.3g} rel {r.max_rel_err:.3g}"
                            for r in bad)
        raise ValueError(f"{path.name} [{variant}] differs from PyTorch beyond tolerance "
                         f"(abs {tol.abs}, rel {tol.rel}): {details}")
    return reports
