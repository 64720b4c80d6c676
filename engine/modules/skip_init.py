"""Building modules whose weights are about to be loaded, without drawing random ones first."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


# torch.nn.init's random initialisers, which module constructors call
_RANDOM_INITS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                 "xavier_uniform_", "xavier_normal_")


@contextlib.contextmanager
def skip_random_init() -> Iterator[None]:
    """Build modules without drawing their random initial weights (a quarter of a second for
    the default model on 2 cores), for a loader that loads every weight strictly right after.
    Deterministic initialisers (ones, zeros) and buffers computed in constructors still run."""
    saved = {name: getattr(nn.init, name) for name in _RANDOM_INITS}
    try:
        for name in _RANDOM_INITS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)
