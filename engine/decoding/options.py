"""User-facing generation options -> the keywords of each decoding mode's parameter objects.

The one mapping for every entry point: CLI flags (``--temperature --top-k --top-p --cfg --seed
--steps --mode``), preset keys and protocol options (``temperature top_k top_p cfg seed steps
mode``) become API keywords (``set_generation_params``: ``cfg`` is ``cfg_coef``, ``steps`` is
``decoding_steps``), and a MAGNeT-family model maps the shared sampling keywords onto the
parameter objects of the mode in use (:class:`~engine.decoding.ar_params.ARParams`,
:class:`~engine.decoding.magnet_params.MagnetParams`):

=============  ===================  ==================================  ==================
keyword        ``ar``               ``magnet``                          ``hybrid``
=============  ===================  ==================================  ==================
temperature    AR LM's temperature  MAGNeT's (annealed to 0 per stage)  both LMs'
top_k, top_p   AR LM's              MAGNeT's                            both LMs'
cfg_coef       AR LM's guidance     ``max_cfg_coef``: the guidance the  both
                                    anneal starts from (it ends at
                                    ``min_cfg_coef``, default 1)
=============  ===================  ==================================  ==================

``top_k`` given without ``top_p`` turns nucleus sampling off in the modes it reaches (MAGNeT's
default ``top_p`` 0.9 would otherwise override it); ``top_p > 0`` overrides ``top_k`` (as
audiocraft). A keyword that applies to some modes only is refused in the others, naming it and
the mode, before any work.
"""
from __future__ import annotations

from typing import Any, Mapping

# user-facing name (CLI flag without dashes, preset key, protocol option) -> API keyword
USER_TO_API: dict[str, str] = {"mode": "mode", "seed": "seed", "temperature": "temperature",
                               "top_k": "top_k", "top_p": "top_p", "cfg": "cfg_coef",
                               "steps": "decoding_steps"}

_API_TO_USER = {api: user for user, api in USER_TO_API.items() if api != user}

# shared sampling keyword -> the MAGNeT._configure keywords it sets, per mode
_SAMPLING_TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "ar": {"temperature": ("ar_temperature",), "top_k": ("ar_top_k",),
           "top_p": ("ar_top_p",), "cfg_coef": ("ar_cfg_coef",)},
    "magnet": {"temperature": ("temperature",), "top_k": ("top_k",), "top_p": ("top_p",),
               "cfg_coef": ("max_cfg_coef",)},
    "hybrid": {"temperature": ("temperature", "ar_temperature"),
               "top_k": ("top_k", "ar_top_k"), "top_p": ("top_p", "ar_top_p"),
               "cfg_coef": ("max_cfg_coef", "ar_cfg_coef")},
}
MODES = tuple(_SAMPLING_TARGETS)   # every decoding mode: ar, magnet, hybrid
_MASKED = ("magnet", "hybrid")
_WITH_AR = ("ar", "hybrid")
# keywords that apply to some modes only -> those modes
MODE_ONLY: dict[str, tuple[str, ...]] = {
    "decoding_steps": _MASKED, "span_arrangement": _MASKED, "span_scoring": _MASKED,
    "span_len": _MASKED, "max_cfg_coef": _MASKED, "min_cfg_coef": _MASKED,
    "rescore_weight": _MASKED, "hybrid_prefix_s": ("hybrid",),
    "ar_temperature": _WITH_AR, "ar_top_k": _WITH_AR, "ar_top_p": _WITH_AR,
    "ar_cfg_coef": _WITH_AR,
}


def api_params(options: Mapping[str, Any]) -> dict[str, Any]:
    """User-facing option names -> ``set_generation_params`` keywords (None values dropped);
    ValueError names an unknown option."""
    unknown = sorted(set(options) - set(USER_TO_API))
    if unknown:
        raise ValueError(f"unknown generation option(s) {', '.join(unknown)}; known: "
                         f"{', '.join(USER_TO_API)}")
    params = {USER_TO_API[k]: v for k, v in options.items() if v is not None}
    if "decoding_steps" in params:
        params["decoding_steps"] = tuple(params["decoding_steps"])
    return params


def refuse_inapplicable(mode: str, params: Mapping[str, Any]) -> None:
    """ValueError naming the first keyword of ``params`` that does not apply to ``mode`` (with
    its user-facing name, e.g. ``decoding_steps (steps)``)."""
    for name in sorted(params):
        modes = MODE_ONLY.get(name)
        if modes is not None and mode not in modes:
            alias = _API_TO_USER.get(name)
            named = name if alias is None else f"{name} ({alias})"
            raise ValueError(f"{named} does not apply to mode {mode!r} (only to "
                             f"{' and '.join(modes)})")


def magnet_keywords(mode: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``set_generation_params`` keywords of a MAGNeT-family model in ``mode`` -> the keywords
    of ``MAGNeT._configure`` (the table in the module docstring). ValueError for a keyword the
    mode does not take, or a shared keyword given beside one it sets."""
    refuse_inapplicable(mode, params)
    targets = _SAMPLING_TARGETS[mode]
    out = {k: v for k, v in params.items() if k not in targets}
    for name, value in params.items():
        for target in targets.get(name, ()):
            if target != name and target in params:
                raise ValueError(f"give {name} or {target}, not both (in mode {mode!r}, "
                                 f"{name} sets {target})")
            out[target] = value
    if "top_k" in params and "top_p" not in params:
        for target in targets["top_p"]:
            out.setdefault(target, 0.0)
    return out
