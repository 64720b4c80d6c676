"""One job end to end on the worker thread: generate, cut to the tempo, publish, persist.

``Renderer.render(job, progress)`` returns what ``/barforge/done`` reports. The WAV is on disk
(write-then-rename) before the method returns; the clip is in its shared-memory slot.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np

from bridge import clip_render, continuation
from bridge.generation import Settings, sample_request
from bridge.melody import read_melody
from bridge.jobs import Cancelled, Job, NoCapture
from bridge.osc_protocol import Continue
from bridge.persistence import ClipStore
from engine.sample_generation import Progress, SampleRequest, generate_samples
from engine.tempo import Tempo

Generate = Callable[[SampleRequest, Progress], np.ndarray]
log = logging.getLogger("bridge.renderer")
# Warm-up continuation lengths (seconds after the prompt): a short one pays the one-off set-up,
# a live-sized one (a bar or two plus the gap before it) sets the speed estimate.
WARM_UP_SECONDS = (2.0, 4.0)


@dataclass(frozen=True)
class Published:
    """The fields of ``/barforge/done`` plus what the job log line reports."""

    slot: int
    frames: int
    sample_rate: int
    channels: int
    start_beat: float
    path: str
    bar_fraction_left: float | None = None


class Renderer:
    """Holds the model, the segment and the clip store; used by the worker thread only.

    ``generate`` runs the engine's requests: ``generate_samples`` on ``model`` in this process
    by default; the Triton engine (bridge/triton_engine.py) sends them to a server instead, and
    ``model`` is then what that server reported of its model.
    """

    def __init__(self, model: Any, model_name: str, segment: Any, store: ClipStore,
                 generate: Generate | None = None) -> None:
        self.model, self.model_name, self.segment, self.store = model, model_name, segment, store
        self.generate: Generate = generate or (lambda request, progress:
                                               generate_samples(model, request, progress))
        self.speed = continuation.SpeedEstimate()
        self.frame_rate = Fraction(model.frame_rate).limit_denominator(10_000) \
            if getattr(model, "frame_rate", None) else None

    def warm_up(self, seconds: tuple[float, ...] = WARM_UP_SECONDS) -> None:
        """Run a continuation of each of ``seconds`` after a live-sized prompt in every supported
        mode, as a live continue runs it, so the first request finds every one-off set-up done
        (allocations sized, kernels picked); the last length's wall time is the speed estimate
        the continuation planner starts from (and picks the fastest mode by)."""
        rate = int(self.model.sample_rate)
        prompt = 0.01 * np.random.default_rng(0).standard_normal(
            (int(rate * continuation.PROMPT_SECONDS), int(self.model.audio_channels)),
            dtype=np.float32)
        for mode in self.model.supported_modes:
            for length in seconds:
                request = SampleRequest("warm up", {"mode": mode, "seed": 0},
                                        round(rate * (continuation.PROMPT_SECONDS + length)), rate,
                                        Tempo(120), prompt, rate)
                t0 = time.monotonic()
                self.generate(request, lambda fraction: None)
            self.speed.record(mode, time.monotonic() - t0, seconds[-1])
        log.info("generation speed (wall s per audio s): %s", self.speed.snapshot())

    def render(self, job: Job, settings: Settings, progress: Any) -> Published:
        if isinstance(job.request, Continue):
            return self._continue(job, settings, progress)
        return self._generate(job, settings, progress)

    def _finish(self, job: Job, settings: Settings, audio: np.ndarray, start: int, seam: str,
                start_beat: float, extra: dict[str, Any]) -> tuple[Published, int]:
        t, frames = job.transport, job.frames
        clip, flags = clip_render.cut_clip(audio, start, frames, t.sample_rate, seam)
        clip, loud = clip_render.normalize_loudness(clip, t.sample_rate, settings.loudness)
        meta = {"job": job.id, "model": self.model_name, "prompt": job.request.prompt,
                "description": settings.description, "preset": settings.preset, "mode": settings.mode,
                "seed": settings.seed, "temperature": settings.temperature, "top_k": settings.top_k,
                "top_p": settings.top_p, "cfg": settings.cfg,
                "steps": list(settings.steps) if settings.steps else None,
                "bpm": float(t.bpm), "bpm_exact": str(t.bpm), "beats_per_bar": t.beats_per_bar,
                "bars": job.request.bars, "start_beat": start_beat, "flags": flags,
                "loudness_target_lufs": settings.loudness, "loudness_measured_lufs": loud.measured_lufs,
                "gain_db": loud.gain_db, "true_peak_dbtp": loud.true_peak_dbtp, **extra}
        job.check_cancel()
        path = self.store.save(clip, t.sample_rate, meta)
        try:
            job.commit()  # from here the job ends in done; a cancel until now removes the files
        except Cancelled:
            self.store.discard(path)
            raise
        slot = self.segment.publish(clip, sample_rate=t.sample_rate, bars=job.request.bars,
                                    bpm=float(t.bpm), beats_per_bar=t.beats_per_bar,
                                    start_beat=start_beat, flags=flags, job_id=job.id)
        return Published(slot, frames, t.sample_rate, clip.shape[1], start_beat, str(path)), flags

    def _generate(self, job: Job, settings: Settings, progress: Any) -> Published:
        t = job.transport
        samples = job.frames + self._margin_frames(t.sample_rate)
        tempo = Tempo(t.bpm, t.beats_per_bar)
        options = job.request.options
        melody = (read_melody(self.segment, options, tempo, job.request.bars)
                  if options.melody else None)
        t0 = time.monotonic()
        wav = self.generate(sample_request(settings, samples, t.sample_rate, tempo,
                                           melody=melody), progress)
        self.speed.record(settings.mode, time.monotonic() - t0, samples / t.sample_rate)
        audio = self._to_host(wav, settings.channels, t.sample_rate)
        published, _ = self._finish(job, settings, audio, 0, "start", -1.0,
                                    melody.source if melody else {})
        return published

    @staticmethod
    def _margin_frames(sample_rate: int) -> int:
        """Frames generated past a clip's end for its loop seam (``SEAM_MARGIN_S``)."""
        return round(clip_render.SEAM_MARGIN_S * sample_rate)

    def _continue(self, job: Job, settings: Settings, progress: Any) -> Published:
        t = job.transport
        t_start = time.monotonic()
        window = self.segment.read_capture(1)
        if window is None or window.end_frame <= 0:
            raise NoCapture("no audio has been captured since /barforge/capture")
        capture_rate = window.sample_rate
        n = continuation.prompt_frames(min(window.end_frame, self.segment_capture_capacity()),
                                       capture_rate, self.frame_rate)
        window = self.segment.read_capture(n) if n > 0 else None
        read_at = time.monotonic()
        if window is None or window.audio.shape[0] < max(1, n):
            raise NoCapture(f"the capture ring holds too little audio ({n} frames usable)")
        clip_s = job.frames / t.sample_rate
        p = continuation.plan(window.beat_at_end, read_at, t.bpm, t.beats_per_bar, clip_s,
                              clip_render.SEAM_MARGIN_S, self.speed.seconds_per_second(settings.mode))
        prompt = clip_render.match_channels(window.audio.astype(np.float32), self.model.audio_channels)
        prompt_end_s = Fraction(window.audio.shape[0], capture_rate)
        start = continuation.clip_start_frame(prompt_end_s, p.gap_s, t.sample_rate)
        t0 = time.monotonic()
        prompt_beats = window.audio.shape[0] / capture_rate * float(t.bpm) / 60
        wav = self.generate(sample_request(
            settings, start + job.frames + self._margin_frames(t.sample_rate), t.sample_rate,
            Tempo(t.bpm, t.beats_per_bar, window.beat_at_end - prompt_beats), prompt,
            capture_rate), progress)
        t_generated = time.monotonic()
        self.speed.record(settings.mode, t_generated - t0, p.new_s)
        audio = self._to_host(wav, settings.channels, t.sample_rate)
        t_resampled = time.monotonic()
        extra = {"capture_end_frame": int(window.end_frame), "capture_beat_at_end": window.beat_at_end,
                 "capture_sample_rate": capture_rate, "prompt_frames": int(window.audio.shape[0]),
                 "clip_start_in_generated": start, "skipped_next_bar": p.skipped_bar,
                 "bars_skipped": p.bars_skipped}
        published, _ = self._finish(job, settings, audio, start, "end", float(p.start_beat), extra)
        t_published = time.monotonic()
        beat_now = self._beat_now(window.end_frame, window.beat_at_end, read_at, t.bpm)
        left = continuation.bar_fraction_left(p.start_beat, beat_now, t.beats_per_bar)
        log.info("job %s continue timing (ms): read+plan %.0f, generate %.0f (%.2f s of audio, "
                 "mode %s), resample %.0f, cut+save+publish %.0f; bars skipped %d, bar left %.3f",
                 job.id, 1000 * (t0 - t_start), 1000 * (t_generated - t0), p.new_s,
                 settings.mode, 1000 * (t_resampled - t_generated),
                 1000 * (t_published - t_resampled), p.bars_skipped, left)
        return Published(**{**published.__dict__, "bar_fraction_left": left})

    def segment_capture_capacity(self) -> int:
        """Frames of the ring a read may take (the block being written is left alone)."""
        return int(self.segment.layout.capture_readable_frames)

    def _beat_now(self, end_frame: int, beat_at_end: float, read_at: float, bpm: Fraction) -> float:
        """The session beat now: from the ring if the host kept writing, else extrapolated."""
        latest = self.segment.read_capture(1)
        if latest is not None and latest.end_frame > end_frame:
            # the host writes in blocks; the beat moved on since its last write
            return latest.beat_at_end
        return beat_at_end + (time.monotonic() - read_at) * float(bpm) / 60

    def _to_host(self, wav: np.ndarray, channels: int, sample_rate: int) -> np.ndarray:
        audio = clip_render.match_channels(wav, channels)
        return clip_render.resample(audio, self.model.sample_rate, sample_rate)
