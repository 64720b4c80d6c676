"""Model audio -> a tempo-locked clip: resample (soxr), cut to exact frames, loop seam, loudness.

Audio here is numpy float32 [N, C] (frames, channels), the layout of a slot and of a WAV.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyloudnorm
import soxr

SEAM_FADE_S = 0.03        # crossfade length of the loop seam
SEAM_MARGIN_S = 0.25      # audio generated past the clip's end: seam fade + resampler edge
METER_BLOCK_S = 0.4       # pyloudnorm's (BS.1770) gating block
TRUE_PEAK_OVERSAMPLE = 4  # BS.1770-4 true-peak meter: 4x oversampling at 48 kHz
TRUE_PEAK_SAFETY_DB = 0.05
FLAG_LOOP_SEAM = 1


@dataclass(frozen=True)
class LoudnessResult:
    """What normalisation measured and did (None when the clip is silent)."""

    measured_lufs: float | None
    gain_db: float
    true_peak_dbtp: float | None


def resample(audio: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """[N, C] at ``in_rate`` -> [M, C] at ``out_rate`` with soxr's very-high-quality filter."""
    if in_rate == out_rate:
        return np.ascontiguousarray(audio, dtype=np.float32)
    out = soxr.resample(np.ascontiguousarray(audio, dtype=np.float32), in_rate, out_rate, quality="VHQ")
    return out.reshape(-1, audio.shape[1]).astype(np.float32, copy=False)  # [M, C]


def match_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """[N, C] -> [N, channels]: mono is duplicated, more channels are averaged down to mono."""
    c = audio.shape[1]
    if c == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=1, keepdims=True)
    if c == 1:
        return np.repeat(audio, channels, axis=1)
    raise ValueError(f"cannot map {c} channels to {channels}; expected 1 or 2 channels")


def seam_fade_frames(frames: int, sample_rate: int) -> int:
    """Crossfade length for a clip of ``frames`` frames: SEAM_FADE_S, at most a quarter of the clip."""
    return max(1, min(round(SEAM_FADE_S * sample_rate), frames // 4))


def _equal_power(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.cos(t * math.pi / 2)[:, None], np.sin(t * math.pi / 2)[:, None]  # fade-out, fade-in


def loop_seam_into_start(clip: np.ndarray, past_end: np.ndarray) -> np.ndarray:
    """Crossfade the audio generated past the end into the clip's start.

    ``past_end`` [L, C] is what the model played right after the clip's last frame, so once
    the start is mostly ``past_end`` the wrap from the last frame to the first continues the
    music as it was generated; over L frames the start fades back to the clip's own audio.
    """
    n = past_end.shape[0]
    out, inn = _equal_power(n)
    result = clip.copy()
    result[:n] = past_end * out + clip[:n] * inn
    return result


def loop_seam_into_end(clip: np.ndarray, before_start: np.ndarray) -> np.ndarray:
    """Crossfade the clip's end into the audio that came right before its first frame.

    For clips whose first frames must stay untouched (a continuation starts exactly where the
    live audio goes on): the last L frames fade into ``before_start`` [L, C], which the first
    frame naturally follows, so the wrap continues the music.
    """
    n = before_start.shape[0]
    out, inn = _equal_power(n)
    result = clip.copy()
    result[-n:] = clip[-n:] * out + before_start * inn
    return result


def looped(clip: np.ndarray, min_frames: int) -> np.ndarray:
    """The clip repeated until it holds at least ``min_frames`` frames (and at least twice)."""
    reps = max(2, math.ceil(min_frames / clip.shape[0]))
    return np.concatenate([clip] * reps, axis=0)


def true_peak(audio: np.ndarray, sample_rate: int) -> float:
    """Linear true peak of a looping clip: the max |sample| of 4x-oversampled audio (wrap included).

    Never below the sample peak: the resampler's band edge sits under Nyquist, so an
    isolated click would otherwise read low.
    """
    pad = min(64, audio.shape[0])
    wrapped = np.concatenate([audio[-pad:], audio, audio[:pad]], axis=0)
    up = soxr.resample(wrapped.astype(np.float32), sample_rate, sample_rate * TRUE_PEAK_OVERSAMPLE,
                       quality="HQ")
    return max(float(np.max(np.abs(up))), float(np.max(np.abs(audio)))) if up.size else 0.0


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """BS.1770 integrated loudness (LUFS) of a looping clip; short clips are measured looped."""
    block = math.ceil(METER_BLOCK_S * sample_rate) + 1
    measured = audio if audio.shape[0] >= block else looped(audio, block)
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(measured.astype(np.float64)))


def normalize_loudness(clip: np.ndarray, sample_rate: int, target_lufs: float = -14.0,
                       ceiling_dbtp: float = -1.0) -> tuple[np.ndarray, LoudnessResult]:
    """Gain the clip to ``target_lufs`` unless that would push its true peak over the ceiling.

    One static gain: where the ceiling binds, the clip ends up quieter than the target (no
    limiter changes its sound). A silent clip is returned unchanged.
    """
    lufs = integrated_loudness(clip, sample_rate)
    peak = true_peak(clip, sample_rate)
    if not math.isfinite(lufs) or peak <= 0.0:
        return clip, LoudnessResult(None, 0.0, None)
    gain_db = target_lufs - lufs
    ceiling_db = ceiling_dbtp - TRUE_PEAK_SAFETY_DB
    peak_db = 20 * math.log10(peak)
    gain_db = min(gain_db, ceiling_db - peak_db)
    out = (clip * 10 ** (gain_db / 20)).astype(np.float32)
    return out, LoudnessResult(lufs, gain_db, peak_db + gain_db)


def cut_clip(audio: np.ndarray, start: int, frames: int, sample_rate: int,
             seam: str) -> tuple[np.ndarray, int]:
    """Take ``frames`` frames from ``start`` of [N, C] host-rate audio and apply the loop seam.

    ``seam``: "start" (generated clip: the audio past the end fades into the start), "end"
    (continuation: the end fades into the audio before the start) or "none". Returns the clip
    and its flags (bit 0 when a seam was applied: there was enough audio around the clip).
    """
    if start < 0 or start + frames > audio.shape[0]:
        raise ValueError(f"cut_clip: frames {start}..{start + frames} outside the {audio.shape[0]} generated")
    clip = np.ascontiguousarray(audio[start:start + frames], dtype=np.float32)
    fade = seam_fade_frames(frames, sample_rate)
    if seam == "start" and audio.shape[0] - (start + frames) >= fade:
        return loop_seam_into_start(clip, audio[start + frames:start + frames + fade]), FLAG_LOOP_SEAM
    if seam == "end" and start >= fade:
        return loop_seam_into_end(clip, audio[start - fade:start]), FLAG_LOOP_SEAM
    return clip, 0
