"""``MAGNeT``: MusicGen's API with masked decoding, plus hybrid and AR modes over an AR LM.

Modes (``set_generation_params(mode=...)``): ``"magnet"`` (engine/decoding/magnet.py on the
non-causal LM), ``"hybrid"`` (an AR prefix by the AR LM, then MAGNeT; engine/decoding/hybrid.py)
and ``"ar"`` (the AR LM alone, exactly as MusicGen decodes). The last two need an AR LM: the
checkpoint's own (``ar_lm``) or one given to ``engine.MAGNeT.get_pretrained(path,
ar_model=...)`` (engine/api.py); it must use the same codec and text encoder. Every mode
renders any length: past one segment the masked modes decode overlapping windows
(engine/decoding/magnet.py ``generate_magnet_windows``), the AR LM its own windows. Everything
else (text conditioning, continuation, audio decoding, progress, cancellation) is MusicGen's.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from engine.backends.base import StepBackend
from engine.config_dict import Seed
from engine.decoding.ar import generate_ar
from engine.decoding.hybrid import default_prefix_seconds, generate_hybrid
from engine.decoding.magnet import DEFAULT_ATTN_BAND, ARRescorer, generate_magnet_windows
from engine.decoding.magnet_params import MagnetParams
from engine.decoding.options import magnet_keywords
from engine.decoding.ar_params import ARParams
from engine.decoding.progress import Progress, ProgressCallback
from engine.models.musicgen import MusicGen, TextEncoder
from engine.tempo import Tempo

MODE_ORDER = ("magnet", "hybrid", "ar")  # with an AR LM; the first is the default mode
WINDOW_STRIDE = 0.6  # windows past one segment advance by this share of it (by default)


def window_stride(extend_stride: float, window_s: float) -> float:
    """Seconds a window advances by: ``extend_stride`` when shorter than the window, else
    ``WINDOW_STRIDE`` of it (audiocraft's 18 s default assumes a 30-s window)."""
    return extend_stride if extend_stride < window_s else WINDOW_STRIDE * window_s
DEFAULT_AR_MAX_DURATION = 30.0


class MAGNeT(MusicGen):
    """Text to music with MAGNeT's masked decoding; ``max_duration`` is the segment length."""

    def __init__(self, name: str, compression_model: Any, lm: torch.nn.Module | None,
                 text_encoder: TextEncoder | None, max_duration: float = 10.0,
                 backend: StepBackend | None = None,
                 generation_defaults: dict[str, Any] | None = None, *,
                 ar_lm: torch.nn.Module | None = None, ar_backend: StepBackend | None = None,
                 ar_max_duration: float = DEFAULT_AR_MAX_DURATION,
                 attn_band: int | None = DEFAULT_ATTN_BAND,
                 extra: dict[str, Any] | None = None) -> None:
        """``attn_band``: restricted context of codebooks >= 1 in frames (audiocraft's
        ``subcodes_context``; None = unrestricted). ``ar_lm`` / ``ar_backend``: the optional AR
        LM of the hybrid and AR modes, whose window is ``ar_max_duration`` seconds. ``extra``:
        the checkpoint's MAGNeT facts (``subcodes_context``, -1 = unrestricted, overrides
        ``attn_band``; ``span_len``). ``generation_defaults``: :meth:`_configure` keywords;
        audiocraft's ``cfg_coef`` (its MusicGen default, unused by its MAGNeT) is dropped."""
        extra = extra or {}
        if "subcodes_context" in extra:
            context = extra["subcodes_context"]
            attn_band = None if context is None or context < 0 else context
        self.span_len = int(extra.get("span_len", 3))
        generation_defaults = {k: v for k, v in (generation_defaults or {}).items()
                               if k != "cfg_coef"}
        if attn_band is not None and (isinstance(attn_band, bool) or not isinstance(attn_band, int)
                                      or attn_band < 0):
            raise ValueError(f"attn_band must be None or an integer >= 0, got {attn_band!r}")
        self.attn_band = attn_band
        self.ar_lm: torch.nn.Module | None = None
        self.ar_backend: StepBackend | None = None
        self.ar_max_duration = float(ar_max_duration)
        if ar_lm is not None or ar_backend is not None:
            self._set_ar(ar_lm, ar_backend, ar_max_duration, compression_model, lm)
        super().__init__(name, compression_model, lm, text_encoder, max_duration, backend,
                         generation_defaults)

    # ------------------------------------------------------------------ construction

    def _set_ar(self, ar_lm: torch.nn.Module | None, ar_backend: StepBackend | None,
                ar_max_duration: float, codec: Any, lm: torch.nn.Module | None) -> None:
        if ar_backend is None:
            from engine.backends.torch_backend import TorchBackend
            ar_backend = TorchBackend(ar_lm)
        if (ar_backend.n_q, ar_backend.card) != (codec.num_codebooks, codec.cardinality):
            raise ValueError(f"the AR LM ({ar_backend.n_q} codebooks x {ar_backend.card}) does "
                             f"not match the codec ({codec.num_codebooks} x {codec.cardinality})")
        if ar_lm is not None and lm is not None and ar_lm.cfg.cond_dim != lm.cfg.cond_dim:
            raise ValueError(f"the AR LM reads text of width {ar_lm.cfg.cond_dim}, the MAGNeT LM "
                             f"{lm.cfg.cond_dim}: they need the same text encoder")
        self.ar_lm, self.ar_backend = ar_lm, ar_backend
        self.ar_max_duration = float(ar_max_duration)

    @property
    def supported_modes(self) -> tuple[str, ...]:  # type: ignore[override]
        return MODE_ORDER if self.ar_backend is not None else ("magnet",)

    # ------------------------------------------------------------------ parameters

    def _configure_keywords(self, params: dict[str, Any]) -> dict[str, Any]:
        """The caller's keywords mapped onto the mode's parameter objects
        (engine/decoding/options.py), over the packaged defaults."""
        mode = params.get("mode", self.generation_defaults.get("mode", "magnet"))
        self._check_mode(mode)
        return {**self.generation_defaults, **magnet_keywords(mode, params)}

    def _check_mode(self, mode: str) -> None:
        if mode not in self.supported_modes:
            raise ValueError(f"mode {mode!r} is not supported by {self.name}; supported: "
                             f"{', '.join(self.supported_modes)} (hybrid and ar need an AR LM: "
                             "get_pretrained(path, ar_model=...))")

    @property
    def frames_multiple(self) -> int:
        """MAGNeT decodes whole spans (in every mode: the AR mode's count is rounded alike)."""
        return self.magnet_params.span_len

    def _configure(self, duration: float | None = None,
                   decoding_steps: Sequence[int] = (20, 10, 10, 10),
                   span_arrangement: str = "nonoverlap",
                   max_cfg_coef: float = 10.0, min_cfg_coef: float = 1.0,
                   temperature: float = 3.0, top_p: float = 0.9, top_k: int = 0,
                   use_sampling: bool = True, seed: Seed = None,
                   mode: str = "magnet", span_scoring: str | None = None,
                   span_len: int | None = None, rescore_weight: float = 0.0,
                   hybrid_prefix_s: float | None = None, ar_temperature: float = 1.0,
                   ar_top_k: int = 250, ar_top_p: float = 0.0, ar_cfg_coef: float = 3.0,
                   extend_stride: float = 18.0) -> dict[str, Any]:
        """How the next ``generate*`` calls decode, every parameter explicit (audiocraft's
        MAGNeT names and defaults; :meth:`set_generation_params` fills in the model's own and
        maps the shared ``temperature``/``top_k``/``top_p``/``cfg_coef`` onto the mode's), as
        the model attributes they set.

        ``duration``: seconds in all (default: the model's segment; longer pieces are decoded
        in windows that advance by ``extend_stride``, or by 60 % of the window (MAGNeT's
        segment, the AR LM's ``ar_max_duration``) when ``extend_stride`` is not shorter).
        ``mode``: one of ``supported_modes``. ``hybrid_prefix_s``: the hybrid AR prefix
        (default: one bar of the request's tempo, 1.5 s without one, half the clip when that
        is not shorter). ``ar_*``: how the AR LM samples in the hybrid and AR modes.
        ``rescore_weight`` > 0 rescoring needs the AR LM. ValueError names a bad parameter.
        """
        self._check_mode(mode)
        duration = self.max_duration if duration is None else duration
        if rescore_weight and self.ar_backend is None:
            raise ValueError("rescore_weight > 0 needs an AR LM: get_pretrained(path, ar_model=...)")
        if rescore_weight and mode != "ar" and isinstance(duration, (int, float)) \
                and duration > self.max_duration:
            raise ValueError(f"rescore_weight > 0 works within one segment: duration {duration} s "
                             f"is longer than the MAGNeT segment ({self.max_duration} s)")
        if len(tuple(decoding_steps)) != self.backend.n_q:
            raise ValueError(f"decoding_steps needs {self.backend.n_q} entries (one per codebook), "
                             f"got {list(decoding_steps)!r}")
        if hybrid_prefix_s is not None and (
                isinstance(hybrid_prefix_s, bool) or not isinstance(hybrid_prefix_s, (int, float))
                or hybrid_prefix_s <= 0 or (mode == "hybrid" and not hybrid_prefix_s < duration)):
            raise ValueError(f"hybrid_prefix_s must be in (0, duration={duration}), "
                             f"got {hybrid_prefix_s!r}")
        magnet = MagnetParams(duration=duration, decoding_steps=tuple(decoding_steps),
                              span_len=self.span_len if span_len is None else span_len,
                              span_arrangement=span_arrangement, span_scoring=span_scoring,
                              max_cfg_coef=max_cfg_coef, min_cfg_coef=min_cfg_coef,
                              temperature=temperature, top_p=top_p, top_k=top_k,
                              use_sampling=use_sampling, rescore_weight=rescore_weight, seed=seed)
        ar = ARParams(duration=duration, temperature=ar_temperature, top_k=ar_top_k,
                      top_p=ar_top_p, cfg_coef=ar_cfg_coef, use_sampling=use_sampling,
                      extend_stride=extend_stride, seed=seed)
        return {"mode": mode, "magnet_params": magnet, "ar_params": ar,
                "magnet_stride_s": window_stride(extend_stride, self.max_duration),
                "ar_stride_s": window_stride(extend_stride, self.ar_max_duration),
                "hybrid_prefix_s": None if hybrid_prefix_s is None else float(hybrid_prefix_s),
                "generation_params": ar if mode == "ar" else magnet}

    # ------------------------------------------------------------------ decoding

    def _generate_tokens(self, descriptions: list[str | None], prompt: torch.Tensor | None,
                         melodies: list[torch.Tensor | None] | None, progress: bool,
                         progress_callback: ProgressCallback | None,
                         tempo: Tempo | None) -> torch.Tensor:
        """Codes [B, K, T] of the current mode; the prompt's frames first, unchanged."""
        B = len(descriptions)
        total = int(self.magnet_params.duration * self.frame_rate)
        conditioned = any(descriptions)
        text = self._text(descriptions)
        beat, key = self._beat(descriptions, tempo), self._key(descriptions)
        bar = Progress(progress, progress_callback)
        try:
            if self.mode == "ar":
                return self._generate_ar(text, B, conditioned, prompt, bar, beat, key)
            # audiocraft guides whenever there is a condition; 1 -> 1 annealing is no guidance
            p = self.magnet_params
            cfg = conditioned and not p.max_cfg_coef == p.min_cfg_coef == 1.0
            rows = self._condition_rows(text, None, cfg, beat, key)
            rescorer = None
            if p.rescore_weight > 0.0:
                assert self.ar_backend is not None
                rescorer = ARRescorer(self.ar_backend, rows, batch=B, cfg=cfg,
                                      cfg_coef=self.ar_params.cfg_coef, pattern=self.pattern)
            window = int(self.max_duration * self.frame_rate)
            stride = int(self.magnet_stride_s * self.frame_rate)
            if self.mode == "magnet":
                return generate_magnet_windows(
                    self.backend, rows, p, batch=B, cfg=cfg, n_frames=total, window_frames=window,
                    stride_frames=stride, attn_band=self.attn_band, prompt=prompt,
                    rescorer=rescorer, progress_callback=bar)
            assert self.ar_backend is not None
            return generate_hybrid(
                self.ar_backend, self.backend, rows, self.ar_params, p, batch=B, cfg=cfg,
                n_frames=total, prefix_frames=self.hybrid_prefix_frames(tempo),
                ar_window_frames=int(self.ar_max_duration * self.frame_rate),
                ar_stride_frames=int(self.ar_stride_s * self.frame_rate),
                attn_band=self.attn_band, prompt=prompt, rescorer=rescorer,
                progress_callback=bar, pattern=self.pattern, magnet_window_frames=window,
                magnet_stride_frames=stride)
        finally:
            bar.close()

    def hybrid_prefix_frames(self, tempo: Tempo | None) -> int:
        """Frames the hybrid mode decodes autoregressively (at least one): ``hybrid_prefix_s``
        when set, else one bar of ``tempo`` (1.5 s without one), else half the clip when that
        is not shorter than it."""
        duration = self.magnet_params.duration
        prefix_s = self.hybrid_prefix_s
        if prefix_s is None:
            prefix_s = default_prefix_seconds(tempo)
            if prefix_s >= duration:
                prefix_s = duration / 2
        return max(1, round(prefix_s * self.frame_rate))

    def _generate_ar(self, text: tuple[torch.Tensor, torch.Tensor] | None, batch: int,
                     conditioned: bool, prompt: torch.Tensor | None,
                     bar: ProgressCallback, beat: torch.Tensor | None,
                     key: torch.Tensor | None) -> torch.Tensor:
        """The AR LM alone, decided exactly as MusicGen decides (CFG rule, windows)."""
        assert self.ar_backend is not None
        p = self.ar_params
        cfg = p.cfg_coef != 1.0 and conditioned
        rows = self._condition_rows(text, None, cfg, beat, key)
        return generate_ar(self.ar_backend, rows.at_frame, p, batch=batch, cfg=cfg,
                           total_frames=int(p.duration * self.frame_rate),
                           window_frames=int(self.ar_max_duration * self.frame_rate),
                           stride_frames=int(self.ar_stride_s * self.frame_rate), prompt=prompt,
                           progress_callback=bar, pattern=self.pattern)

