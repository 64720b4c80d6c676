"""Progress of a generation: the callback type every loop and ``generate*`` takes, and the
reporter that chains a caller's callback with an optional tqdm bar.

``progress_callback(done_steps, total_steps)``: an exception raised by the callback propagates
out of the loop unchanged; that is how the bridge cancels a running job within one step.
"""
from __future__ import annotations

from typing import Callable

ProgressCallback = Callable[[int, int], None]


class Progress:
    """Chains the user's callback and, with ``show``, a tqdm bar (callback exceptions propagate)."""

    def __init__(self, show: bool, callback: ProgressCallback | None) -> None:
        self.show, self.callback, self.bar = show, callback, None

    def __call__(self, done: int, total: int) -> None:
        if self.show:
            if self.bar is None:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="step", desc="generating", leave=False)
            self.bar.update(done - self.bar.n)
        if self.callback is not None:
            self.callback(done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
