"""``MusicGen``: the audiocraft-style Python API over a codec, a text encoder and a step backend.

``generate`` / ``generate_continuation`` / ``generate_with_chroma`` / ``generate_unconditional``
take and return what audiocraft's do (audio [B, C, N] at ``sample_rate``; codes [B, K, T] with
``return_tokens``); decoding is the AR loop of engine/decoding/ar.py on a ``StepBackend``
(``TorchBackend`` over ``lm`` unless another backend is given). Loading by name
(``MusicGen.get_pretrained``) is engine/api.py's, the class callers import from ``engine``.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np
import soxr
import torch
import torch.nn.functional as F

from engine.backends.base import ConditionTensors, StepBackend
from engine.config_dict import Seed
from engine.conditioners.chroma import ChromaExtractor, melody_chroma, null_chroma
from engine.conditioners.key import caption_key
from engine.conditioners.caption import caption_bpm
from engine.conditioners.text import TextCache, TextEncoder
from engine.decoding.ar import generate_ar
from engine.decoding.delay_pattern import DelayPattern
from engine.decoding.options import refuse_inapplicable
from engine.decoding.ar_params import ARParams
from engine.decoding.progress import Progress, ProgressCallback
from engine.tempo import Tempo

MelodyType = torch.Tensor | Sequence[torch.Tensor | None]


def convert_audio(wav: torch.Tensor, from_rate: int, to_rate: int, channels: int) -> torch.Tensor:
    """wav [B, C, N] -> [B, channels, N'] at ``to_rate`` (soxr; mono by mean, stereo by copy)."""
    if wav.dim() != 3:
        raise ValueError(f"audio must be [B, C, N], got {list(wav.shape)}")
    if not isinstance(from_rate, int) or from_rate < 1:
        raise ValueError(f"sample rate must be a positive integer, got {from_rate!r}")
    if wav.shape[1] == channels:
        pass
    elif channels == 1:
        wav = wav.mean(dim=1, keepdim=True)
    elif wav.shape[1] == 1:
        wav = wav.expand(-1, channels, -1)
    else:
        raise ValueError(f"cannot convert {wav.shape[1]} audio channels to {channels}")
    wav = wav.float().cpu()
    if from_rate == to_rate:
        return wav.contiguous()
    rows = [soxr.resample(np.ascontiguousarray(x.numpy().T), from_rate, to_rate) for x in wav]
    return torch.from_numpy(np.stack([r.reshape(r.shape[0], -1).T for r in rows]))


class MusicGen:
    """Text (and melody / audio prompt) to music with the AR delay-pattern decoder."""

    supported_modes: tuple[str, ...] = ("ar",)

    def __init__(self, name: str, compression_model: Any, lm: torch.nn.Module | None,
                 text_encoder: TextEncoder | None, max_duration: float = 30.0,
                 backend: StepBackend | None = None,
                 generation_defaults: dict[str, Any] | None = None,
                 delays: Sequence[int] | None = None) -> None:
        self.name = name
        self.compression_model = compression_model
        self.lm = lm
        self.text_encoder = text_encoder
        self._text_cache = TextCache()
        self._max_duration = float(max_duration)
        if backend is None:
            if lm is None:
                raise ValueError("MusicGen needs an lm or a backend")
            from engine.backends.torch_backend import TorchBackend
            backend = TorchBackend(lm)
        self.backend = backend
        if backend.n_q != compression_model.num_codebooks:
            raise ValueError(f"the LM has {backend.n_q} codebooks, the codec "
                             f"{compression_model.num_codebooks}")
        if backend.card != compression_model.cardinality:
            raise ValueError(f"the LM's codebook size {backend.card} != the codec's "
                             f"{compression_model.cardinality}")
        self.pattern = (DelayPattern(delays) if delays is not None else
                        DelayPattern.for_codebooks(backend.n_q, stereo=self.audio_channels == 2))
        if self.pattern.n_q != backend.n_q:
            raise ValueError(f"{len(self.pattern.delays)} delays for {backend.n_q} codebooks")
        self.provider = getattr(backend, "provider", "torch")
        self._chroma = ChromaExtractor(self.sample_rate)
        # The checkpoint's own sampling defaults (e.g. a preset's few MAGNeT steps): they fill
        # in whatever a set_generation_params call leaves out.
        self.generation_defaults = dict(generation_defaults or {})
        vars(self).update(self._configure(**{"duration": min(8.0, self.max_duration),
                                             **self.generation_defaults}))

    # ------------------------------------------------------------------ properties

    def to(self, device: str | torch.device) -> "MusicGen":
        """Move the LM and the codec (torch models) to ``device``; text encoding and chroma stay
        on the CPU and their outputs are moved."""
        for module in (self.lm, self.compression_model):
            if isinstance(module, torch.nn.Module):
                module.to(device)
        return self

    @property
    def sample_rate(self) -> int:
        return int(self.compression_model.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.compression_model.frame_rate)

    @property
    def audio_channels(self) -> int:
        return int(self.compression_model.channels)

    @property
    def max_duration(self) -> float:
        return self._max_duration

    @property
    def is_melody(self) -> bool:
        """Whether the LM takes chroma (MusicGen-Melody), in PyTorch or in a bundle."""
        return getattr(self.backend, "chroma_bins", 0) > 0

    @property
    def _device(self) -> torch.device:
        if self.lm is not None:
            return next(self.lm.parameters()).device
        return torch.device("cpu")

    def set_generation_params(self, **params: Any) -> None:
        """Set how the next ``generate*`` calls sample: the keywords of :meth:`_configure`
        (audiocraft's names, plus ``seed`` and ``mode``; engine/decoding/options.py maps the
        user-facing names to them). A keyword left out takes the model's packaged default
        (``generation_defaults``), else audiocraft's. ValueError names a bad parameter and its
        allowed range, or a parameter the mode does not take."""
        vars(self).update(self.check_generation_params(**params))

    def check_generation_params(self, **params: Any) -> dict[str, Any]:
        """What :meth:`set_generation_params` would set (attribute -> value), raising what it
        would raise, without changing the model: callers on other threads (the bridge's accept
        step) refuse a request up front with it while a generation runs."""
        kwargs = self._configure_keywords(params)
        known = inspect.signature(self._configure).parameters
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise ValueError(f"unknown generation parameter(s) {', '.join(unknown)}; "
                             f"{type(self).__name__} takes: {', '.join(known)}")
        return self._configure(**kwargs)

    def _configure_keywords(self, params: dict[str, Any]) -> dict[str, Any]:
        """The caller's keywords over the packaged defaults, as :meth:`_configure` takes them."""
        refuse_inapplicable(params.get("mode", "ar"), params)
        return {**self.generation_defaults, **params}

    @property
    def frames_multiple(self) -> int:
        """The model decodes a whole number of groups of this many codec frames."""
        return 1

    def _configure(self, duration: float = 8.0, temperature: float = 1.0,
                   top_k: int = 250, top_p: float = 0.0, cfg_coef: float = 3.0,
                   use_sampling: bool = True, extend_stride: float = 18.0,
                   seed: Seed = None, mode: str = "ar") -> dict[str, Any]:
        """The AR sampling parameters, every one explicit (audiocraft's defaults), as the
        model attributes they set."""
        if mode not in self.supported_modes:
            raise ValueError(f"mode {mode!r} is not supported by {type(self).__name__}; "
                             f"supported: {', '.join(self.supported_modes)}")
        params = ARParams(duration=duration, temperature=temperature, top_k=top_k, top_p=top_p,
                          cfg_coef=cfg_coef, use_sampling=use_sampling,
                          extend_stride=extend_stride, seed=seed)
        if params.duration > self.max_duration and params.extend_stride >= self.max_duration:
            raise ValueError(f"extend_stride must be shorter than max_duration "
                             f"({self.max_duration} s), got {extend_stride}")
        return {"generation_params": params}

    # ------------------------------------------------------------------ public API

    def generate(self, descriptions: Sequence[str], progress: bool = False,
                 progress_callback: ProgressCallback | None = None,
                 return_tokens: bool = False, tempo: Tempo | None = None
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Audio [B, C, N] for each description; ``tempo``: the request's tempo (see
        :meth:`_beat`)."""
        descriptions = self._check_descriptions(descriptions)
        tokens = self._generate_tokens(descriptions, None, None, progress, progress_callback,
                                       tempo)
        return self._finish(tokens, return_tokens)

    def generate_unconditional(self, num_samples: int, progress: bool = False,
                               progress_callback: ProgressCallback | None = None,
                               return_tokens: bool = False
                               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``num_samples`` pieces with the null condition."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        tokens = self._generate_tokens([None] * num_samples, None, None, progress,
                                       progress_callback, None)
        return self._finish(tokens, return_tokens)

    def generate_continuation(self, prompt: torch.Tensor, prompt_sample_rate: int,
                              descriptions: Sequence[str | None] | None = None,
                              progress: bool = False,
                              progress_callback: ProgressCallback | None = None,
                              return_tokens: bool = False, tempo: Tempo | None = None
                              ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Continue ``prompt`` [B, C, N] or [C, N]; returns the prompt's frames then the
        continuation, ``duration`` seconds in all (as audiocraft). ``tempo``: the request's
        tempo, its ``start_beat`` the beat in the bar of the prompt's first frame."""
        if prompt.dim() == 2:
            prompt = prompt[None]
        if prompt.dim() != 3:
            raise ValueError(f"prompt must be [B, C, N] or [C, N], got {list(prompt.shape)}")
        wav = convert_audio(prompt, prompt_sample_rate, self.sample_rate, self.audio_channels)
        if descriptions is None:
            descriptions = [None] * wav.shape[0]
        descriptions = self._check_descriptions(descriptions, allow_none=True)
        if len(descriptions) != wav.shape[0]:
            raise ValueError(f"{len(descriptions)} descriptions for {wav.shape[0]} prompts")
        with torch.inference_mode():
            codes = self.compression_model.encode(wav.to(self._codec_device))  # [B, K, Tp]
        tokens = self._generate_tokens(descriptions, codes.long().cpu(), None, progress,
                                       progress_callback, tempo)
        return self._finish(tokens, return_tokens)

    def generate_with_chroma(self, descriptions: Sequence[str], melody_wavs: MelodyType,
                             melody_sample_rate: int, progress: bool = False,
                             progress_callback: ProgressCallback | None = None,
                             return_tokens: bool = False, tempo: Tempo | None = None
                             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Text + melody: ``melody_wavs`` [B, C, N], [C, N], or a list of [C, N] (or None)."""
        if not self.is_melody:
            raise ValueError(f"{self.name} takes no melody: use a MusicGen-Melody checkpoint")
        descriptions = self._check_descriptions(descriptions, allow_none=True)
        if isinstance(melody_wavs, torch.Tensor):
            if melody_wavs.dim() == 2:
                melody_wavs = melody_wavs[None]
            if melody_wavs.dim() != 3:
                raise ValueError(f"melody_wavs must be [B, C, N] or [C, N], got "
                                 f"{list(melody_wavs.shape)}")
            melody_wavs = list(melody_wavs)
        melodies = list(melody_wavs)
        if len(melodies) != len(descriptions):
            raise ValueError(f"{len(melodies)} melodies for {len(descriptions)} descriptions")
        resampled = [None if m is None else
                     convert_audio(m[None], melody_sample_rate, self.sample_rate, 1)[0]
                     for m in melodies]
        tokens = self._generate_tokens(descriptions, None, resampled, progress, progress_callback,
                                       tempo)
        return self._finish(tokens, return_tokens)

    # ------------------------------------------------------------------ internals

    @property
    def _codec_device(self) -> torch.device:
        params = getattr(self.compression_model, "parameters", None)
        if params is None:
            return torch.device("cpu")
        return next(params()).device

    @staticmethod
    def _check_descriptions(descriptions: Sequence[str | None],
                            allow_none: bool = False) -> list[str | None]:
        if isinstance(descriptions, str):
            raise ValueError("descriptions must be a list of strings, got one string")
        out = list(descriptions)
        if not out:
            raise ValueError("descriptions must not be empty")
        for d in out:
            if not (isinstance(d, str) or (allow_none and d is None)):
                raise ValueError(f"each description must be a string, got {d!r}")
        return out

    def _finish(self, tokens: torch.Tensor, return_tokens: bool
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # row by row: the codec's batched convolutions round differently in the last bit, and
        # a request batched with others must get the samples it gets alone
        with torch.inference_mode():
            codes = tokens.to(self._codec_device)
            wav = torch.cat([self.compression_model.decode(codes[i:i + 1]).float()
                             for i in range(codes.shape[0])])
        return (wav, tokens) if return_tokens else wav

    def _text(self, descriptions: list[str | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Text hidden states and mask; rows without text have mask 0 (audiocraft's null).

        Each description is encoded alone (through the cache) and zero-padded to the longest:
        a row's encoding is then bit for bit the one it gets alone, whatever it is batched
        with. Padding is not neutral, though: the LM attends to padded positions (zero
        embeddings, as audiocraft), so a row's clip equals its clip alone only beside rows of
        the same :meth:`text_length`.
        """
        if self.text_encoder is None:
            return None
        with torch.inference_mode():
            rows = [self._text_cache.encode(self.text_encoder, [d or ""]) for d in descriptions]
        length = max(hidden.shape[1] for hidden, _ in rows)
        hidden = torch.cat([F.pad(h, (0, 0, 0, length - h.shape[1])) for h, _ in rows])
        mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in rows]).float()
        for i, d in enumerate(descriptions):
            if not d:
                mask[i] = 0.0
        return hidden.float(), mask

    def text_length(self, description: str | None) -> int:
        """Text positions ``description`` takes in the LM's condition (0: no text encoder).
        Requests batch without changing each other's clips only when these are equal."""
        text = self._text([description])
        return 0 if text is None else int(text[1].shape[1])

    def _beat(self, descriptions: list[str | None], tempo: Tempo | None) -> torch.Tensor | None:
        """[B, 3] tempo rows (beats per frame, beats per bar, ``start_beat``: the beat in the
        bar of the first frame -- of the prompt, when continuing) at ``tempo``, else at each
        caption's ``"bpm: N"`` in 4/4 from beat 0; rows without a tempo are 0. None when no row
        has one. LMs without beat conditioning ignore it."""
        if tempo is not None:
            tempos: list[Tempo | None] = [tempo] * len(descriptions)
        else:
            tempos = [None if (b := caption_bpm(d)) is None else Tempo(b) for d in descriptions]
        if all(t is None for t in tempos):
            return None
        return torch.tensor([[0.0, 0.0, 0.0] if t is None else
                             [t.beats_per_frame(self.frame_rate), float(t.beats_per_bar),
                              t.start_beat] for t in tempos])

    @staticmethod
    def _key(descriptions: list[str | None]) -> torch.Tensor | None:
        """[B] the key class each caption states (``"key: c minor"``, or words such as
        "in F# minor"; 0: none), or None when none states one. LMs without key conditioning
        ignore it."""
        keys = [caption_key(d) for d in descriptions]
        return torch.tensor(keys) if any(keys) else None

    def _condition_rows(self, text: tuple[torch.Tensor, torch.Tensor] | None,
                        chroma: torch.Tensor | None, cfg: bool,
                        beat: torch.Tensor | None = None,
                        key: torch.Tensor | None = None) -> ConditionTensors:
        """[cond; null] condition rows (2B when ``cfg``) for the backend; null rows have no
        tempo and no key (training drops text, tempo and key together)."""
        hidden, mask = text if text is not None else (None, None)
        if self.is_melody:
            assert chroma is not None
            B = chroma.shape[0]
            rows_text, rows_mask, rows_chroma = hidden, mask, chroma
            if cfg:
                rows_chroma = torch.cat([chroma, null_chroma(B, chroma.shape[1])])
                if hidden is not None:
                    rows_text, rows_mask = _with_null_rows(hidden), _with_null_rows(mask)
            return ConditionTensors(cross=rows_text, cross_mask=rows_mask, chroma=rows_chroma)
        if hidden is None:
            raise ValueError(f"{self.name} has no text encoder and no melody input")
        if cfg:
            hidden, mask = _with_null_rows(hidden), _with_null_rows(mask)
            beat = None if beat is None else _with_null_rows(beat)
            key = None if key is None else _with_null_rows(key)
        dev = self._device
        return ConditionTensors(cross=hidden.to(dev), cross_mask=mask.to(dev),
                                beat=None if beat is None else beat.to(dev),
                                key=None if key is None else key.to(dev))

    def _generate_tokens(self, descriptions: list[str | None], prompt: torch.Tensor | None,
                         melodies: list[torch.Tensor | None] | None, progress: bool,
                         progress_callback: ProgressCallback | None,
                         tempo: Tempo | None) -> torch.Tensor:
        """Codes [B, K, T] for T = int(duration * frame_rate), the prompt first."""
        params = self.generation_params
        B = len(descriptions)
        total = int(params.duration * self.frame_rate)
        window = int(self.max_duration * self.frame_rate)
        stride = int(params.extend_stride * self.frame_rate)
        has_melody = melodies is not None and any(m is not None for m in melodies)
        # with every row unconditional, the null rows would repeat the conditional ones
        cfg = params.cfg_coef != 1.0 and (any(descriptions) or has_melody)
        text = self._text(descriptions)
        conditions = self._condition_source(text, melodies, B, cfg, self._beat(descriptions, tempo),
                                            self._key(descriptions))
        bar = Progress(progress, progress_callback)
        try:
            return generate_ar(self.backend, conditions, params, batch=B, cfg=cfg,
                               total_frames=total, window_frames=window, stride_frames=stride,
                               prompt=prompt, progress_callback=bar, pattern=self.pattern)
        finally:
            bar.close()

    def _condition_source(self, text: tuple[torch.Tensor, torch.Tensor] | None,
                          melodies: list[torch.Tensor | None] | None, batch: int,
                          cfg: bool, beat: torch.Tensor | None = None,
                          key: torch.Tensor | None = None) -> Callable[[int], ConditionTensors]:
        """conditions(offset_frame) for the AR loop: the same rows for every window (the beat
        phase moved on to the window's start), except that a melody is read from the window's
        time on, looped as audiocraft does."""
        chroma_frames = self._chroma.frames_for(int(self.max_duration * self.sample_rate))
        if not self.is_melody:
            return self._condition_rows(text, None, cfg, beat, key).at_frame
        cache: dict[int, ConditionTensors] = {}

        def at(offset: int) -> ConditionTensors:
            if offset not in cache:
                start = int(offset / self.frame_rate * self.sample_rate)
                length = int(self.max_duration * self.sample_rate)
                window_wavs = [None if m is None else _looped(m, start, length)
                               for m in (melodies or [None] * batch)]
                chroma = melody_chroma(window_wavs, self.sample_rate, self.sample_rate,
                                       chroma_frames, self._chroma)
                cache.clear()
                cache[offset] = self._condition_rows(text, chroma, cfg)
            return cache[offset]

        if not melodies or not any(m is not None for m in melodies):
            rows = self._condition_rows(text, null_chroma(batch, chroma_frames), cfg)
            return lambda offset: rows
        return at


def _looped(wav: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """wav [C, N] from sample ``start`` for ``length`` samples, wrapping around; the whole wav
    when the window starts at 0 and the wav is not longer than ``length``."""
    if start == 0 and wav.shape[-1] <= length:
        return wav
    positions = torch.arange(start, start + length) % wav.shape[-1]
    return wav[..., positions]


def _with_null_rows(rows: torch.Tensor) -> torch.Tensor:
    """[rows; zeros]: CFG's null condition is all zeros (no text, tempo or key)."""
    return torch.cat([rows, torch.zeros_like(rows)])
