"""Exact bars for every tempo, meter, bar count and sample rate: property tests (hypothesis).

The length is a chain: ``Tempo.frames`` (rational), the codec frames asked for
(``codec_frames_for`` / ``duration_for``), the frames a model decodes in each mode, the codec's
samples, soxr's resampled length, the cut. The arithmetic links are checked over the whole
input space (bars 1-64, BPM 20-400 with 3 decimals, 1-32 beats per bar, 8-192 kHz); model runs
(API, CLI, bridge; the debug MAGNeT in every mode, the default model and an ONNX bundle of it)
draw the same space with the clip length capped so that a run takes a moment.
"""
import itertools
import math
import os
import socket
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage

from engine.api import debug_magnet
from engine.decoding.options import MODES
from engine.models.magnet import MAGNeT
from engine.tempo import (BARS_RANGE, BEATS_PER_BAR_RANGE, BPM_RANGE, SAMPLE_RATE_RANGE, Tempo,
                          codec_frames_for, duration_for, seconds_for_frames)

FAST = {"magnet": {"decoding_steps": (1, 1, 1, 1)}, "hybrid": {"decoding_steps": (1, 1, 1, 1)},
        "ar": {}}
MODEL_RUNS = settings(max_examples=6, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])

bpms = st.integers(BPM_RANGE[0] * 1000, BPM_RANGE[1] * 1000).map(lambda m: m / 1000)
rates = st.integers(*SAMPLE_RATE_RANGE)


@st.composite
def requests(draw, max_seconds: float | None = None, max_beats_per_bar: int = 32):
    """(bars, bpm, beats_per_bar, sample_rate); with ``max_seconds`` the clip is at most that
    long where the range allows (the bpm's lower bound rises with the bars)."""
    beats = draw(st.integers(BEATS_PER_BAR_RANGE[0], max_beats_per_bar))
    if max_seconds is None:
        return draw(st.integers(*BARS_RANGE)), draw(bpms), beats, draw(rates)
    fit = math.floor(max_seconds * BPM_RANGE[1] / (60 * beats))
    bars = draw(st.integers(1, max(1, min(BARS_RANGE[1], fit))))
    low = min(BPM_RANGE[1] * 1000, math.ceil(bars * beats * 60 * 1000 / max_seconds))
    bpm = draw(st.integers(max(BPM_RANGE[0] * 1000, low), BPM_RANGE[1] * 1000)) / 1000
    return bars, bpm, beats, draw(rates)


def reference_frames(bars, bpm, beats, rate):
    """Independent: the bpm's decimal string as a Fraction, floor(x + 1/2) for positive x."""
    return math.floor(Fraction(bars * beats * 60 * rate) / Fraction(str(bpm)) + Fraction(1, 2))


# ---------------------------------------------------------------- arithmetic, whole space


@settings(max_examples=1000, deadline=None)
@given(requests())
def test_frames_for_bars_is_the_rounded_rational_length(ask):
    bars, bpm, beats, rate = ask
    tempo = Tempo(bpm, beats)
    assert tempo.frames(bars, rate) == reference_frames(bars, bpm, beats, rate)
    assert tempo.bar_seconds == Fraction(60 * beats) / Fraction(str(bpm))


@settings(max_examples=1000, deadline=None)
@given(requests(), st.sampled_from([(32000, 640), (32000, 1280), (24000, 320), (48000, 1920),
                                    (44100, 512)]), st.integers(1, 5))
def test_codec_frames_cover_the_clip_after_resampling_and_one_group_less_would_not(
        ask, codec, multiple):
    bars, bpm, beats, rate = ask
    model_rate, hop = codec
    exact = Tempo(bpm, beats).frames(bars, rate)
    frames = codec_frames_for(exact, rate, model_rate, model_rate / hop, multiple)
    assert frames % multiple == 0
    # soxr returns at least floor(n * rate / model_rate) samples for n in (checked below)
    assert frames * hop * rate // model_rate >= exact
    if frames > multiple:
        assert (frames - multiple) * hop * rate // model_rate < exact + hop * rate // model_rate


@settings(max_examples=1000, deadline=None)
@given(st.integers(1, 64 * 32 * 60 * 50 // 20), st.sampled_from([50.0, 25.0, 37.5, 44100 / 512]))
def test_the_duration_asked_for_gives_the_model_exactly_its_frames(frames, frame_rate):
    assert int(seconds_for_frames(frames, frame_rate) * frame_rate) == frames


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2_000_000), rates, st.sampled_from([32000, 24000, 48000]),
       st.sampled_from(["HQ", "VHQ"]))
def test_soxr_returns_at_least_the_floor_of_the_rate_ratio(n, rate, model_rate, quality):
    out = soxr.resample(np.zeros((n, 1), np.float32), model_rate, rate, quality=quality)
    assert out.shape[0] >= n * rate // model_rate


def test_bad_tempo_inputs_are_refused_by_name():
    for bpm in (19.9994, 400.0006, float("nan"), "120", True):
        with pytest.raises(ValueError, match="bpm"):
            Tempo(bpm)
    assert Tempo(19.9995).bpm == 20 and Tempo(400.0004).bpm == 400   # quantised first
    for beats in (0, 33, 4.0):
        with pytest.raises(ValueError, match="beats_per_bar"):
            Tempo(120, beats)
    with pytest.raises(ValueError, match="bars"):
        Tempo(120).frames(65, 48000)
    with pytest.raises(ValueError, match="sample_rate"):
        Tempo(120).frames(4, 7999)


# ---------------------------------------------------------------- model runs


@pytest.fixture(scope="module")
def magnet_debug() -> MAGNeT:
    return debug_magnet()


def _render(model, mode, bars, bpm, beats, rate):
    """The API path: one bar-exact generation resampled to ``rate``: (audio [N, 1], exact)."""
    tempo = Tempo(bpm, beats)
    exact = tempo.frames(bars, rate)
    model.set_generation_params(mode=mode, seed=0, **FAST[mode])
    model.set_generation_params(duration=duration_for(exact, rate, model), mode=mode, seed=0,
                                **FAST[mode])
    wav = model.generate(["drums"], tempo=tempo)[0].numpy().T  # [N, C]
    return soxr.resample(np.ascontiguousarray(wav), model.sample_rate, rate), exact


@MODEL_RUNS
@given(st.sampled_from(("magnet", "hybrid")), requests(max_seconds=24.0))
@example("magnet", (5, 70.0, 4, 44100)).via("17.1 s: two windows")
@example("hybrid", (3, 105.2, 7, 8000)).via("12 s in 7/4: two windows")
def test_api_masked_modes_cover_the_clip_past_one_segment_too(magnet_debug, mode, ask):
    audio, exact = _render(magnet_debug, mode, *ask)
    assert exact <= audio.shape[0] < exact + 4 * 640 * ask[3] // 32000 + 2


@MODEL_RUNS
@given(requests(max_seconds=0.6, max_beats_per_bar=4))
def test_api_ar_mode_covers_the_clip(magnet_debug, ask):
    audio, exact = _render(magnet_debug, "ar", *ask)
    assert exact <= audio.shape[0]


@pytest.mark.parametrize("which", ["default_model", "default_bundle"])
@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mode=st.sampled_from(MODES), ask=requests(max_seconds=1.5, max_beats_per_bar=8))
def test_default_model_and_its_bundle_cover_the_clip(request, which, mode, ask):
    audio, exact = _render(request.getfixturevalue(which), mode, *ask)
    assert exact <= audio.shape[0]


# ---------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def magnet_debug_dir(magnet_debug, tmp_path_factory):
    """The debug MAGNeT as a native checkpoint folder the CLI loads (one decoding step per
    codebook by default, so runs are quick)."""
    from engine.loaders.native_format import checkpoint_from_modules, save_native
    from engine.loaders.debug_parts import DEBUG_TEXT
    m = magnet_debug
    out = tmp_path_factory.mktemp("magnet_debug")
    save_native(out, checkpoint_from_modules(
        "magnet", m.compression_model, m.lm, DEBUG_TEXT, m.max_duration,
        generation={"decoding_steps": [1, 1, 1, 1]}, ar_lm=m.ar_lm,
        magnet={"span_len": m.span_len, "subcodes_context": m.attn_band},
        ar_max_duration=m.ar_max_duration))
    return out


def _cli_bars(model_dir, out, mode, bars, bpm, beats, rate):
    from engine.cli import main
    code = main(["generate", "drums", "--model", str(model_dir), "--mode", mode, "--bars",
                 str(bars), "--bpm", str(bpm), "--beats-per-bar", str(beats), "--sample-rate",
                 str(rate), "--seed", "3", "-o", str(out)])
    info = sf.info(str(out))
    return code, info.frames, info.samplerate


@MODEL_RUNS
@given(st.sampled_from(MODES).flatmap(
    lambda mode: st.tuples(st.just(mode), requests(max_seconds=0.6 if mode == "ar" else 12.0,
                                                   max_beats_per_bar=4 if mode == "ar" else 32))))
def test_cli_writes_exactly_the_bars_in_every_mode(magnet_debug_dir, tmp_path, mode_ask):
    mode, (bars, bpm, beats, rate) = mode_ask
    code, frames, written_rate = _cli_bars(magnet_debug_dir, tmp_path / "clip.wav", mode, bars,
                                           bpm, beats, rate)
    assert (code, frames, written_rate) == (0, reference_frames(bars, bpm, beats, rate), rate)


# ---------------------------------------------------------------- the bridge


class _Bridge:
    """The bridge in this process: real UDP sockets, a real shared-memory segment, the worker
    thread, the debug MAGNeT; datagrams go in through the dispatcher's entry point."""

    def __init__(self, model, render_dir):
        from bridge.persistence import ClipStore
        from bridge.presets import Preset, load_presets
        from bridge.renderer import Renderer
        from bridge.server import MAX_CHANNELS, Bridge
        from plugin_host.shm import ServerSegment
        self.segment = ServerSegment.create(f"bf-len-{os.getpid()}", 1, 8 * 192000,
                                            MAX_CHANNELS, 16384)
        renderer = Renderer(model, "debug-magnet", self.segment, ClipStore(render_dir))
        self.bridge = Bridge(renderer, "torch", load_presets(), Preset("none"), 4,
                             self.segment.layout.slot_capacity_frames, warm_up=False)
        self.bridge.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(120.0)
        self.bridge.jobs.start()
        self.jobs = itertools.count()

    def send(self, address, *args):
        from bridge.osc_protocol import build
        self.bridge.call_handlers_for_packet(build(address, *args), self.client.getsockname())

    def reply(self, *final):
        """The next reply whose address is one of ``final`` (progress and others skipped)."""
        while True:
            m = OscMessage(self.client.recv(65536))
            if m.address in final:
                return m.address, list(m.params)

    def close(self):
        self.bridge.jobs.stop()
        self.segment.close(unlink=True)
        self.bridge.sock.close()
        self.client.close()


@pytest.fixture(scope="module")
def bridge_in_process(magnet_debug, tmp_path_factory):
    b = _Bridge(magnet_debug, tmp_path_factory.mktemp("clips"))
    yield b
    b.close()


@MODEL_RUNS
@given(st.sampled_from(MODES).flatmap(
    lambda mode: st.tuples(st.just(mode), requests(max_seconds=0.6 if mode == "ar" else 8.0,
                                                   max_beats_per_bar=4 if mode == "ar" else 32))))
def test_bridge_publishes_exactly_the_bars_in_every_mode(bridge_in_process, mode_ask):
    mode, (bars, bpm, beats, rate) = mode_ask
    b = bridge_in_process
    b.send("/barforge/transport", float(bpm), beats, rate)
    assert b.reply("/barforge/ack", "/barforge/error") == ("/barforge/ack", ["transport"])
    steps = () if mode == "ar" else ("steps", "1,1,1,1")
    job = f"j{next(b.jobs)}"   # a finished job's id is free only once the worker lets it go
    b.send("/barforge/generate", job, "drums", bars, "mode", mode, "seed", 5, *steps)
    address, done = b.reply("/barforge/done", "/barforge/error")
    assert address == "/barforge/done", done
    exact = reference_frames(bars, bpm, beats, rate)
    assert done[2:4] == [exact, rate]
    info = sf.info(done[6])
    assert (info.frames, info.samplerate) == (exact, rate)


@st.composite
def continuations(draw):
    """(mode, input seconds, input rate, --prompt-seconds, --duration, --sample-rate)."""
    mode = draw(st.sampled_from(MODES))
    longest = 0.4 if mode == "ar" else 5.0
    prompt_s = draw(st.integers(20, int(longest * 1000))) / 1000
    duration = draw(st.integers(20, int(longest * 1000))) / 1000
    input_s = draw(st.integers(20, int(longest * 1200))) / 1000
    return mode, input_s, draw(rates), prompt_s, duration, draw(rates)


@MODEL_RUNS
@given(continuations())
def test_cli_continue_writes_the_prompt_and_the_new_audio_exactly(magnet_debug_dir, tmp_path, ask):
    from engine.cli import main
    mode, input_s, in_rate, prompt_s, duration, rate = ask
    source = tmp_path / "in.wav"
    n_in = max(1, round(input_s * in_rate))
    sf.write(source, np.random.default_rng(0).normal(0, 0.1, (n_in, 1)).astype(np.float32), in_rate)
    out = tmp_path / "out.wav"
    code = main(["continue", str(source), "more", "--model", str(magnet_debug_dir), "--mode", mode,
                 "--prompt-seconds", str(prompt_s), "--duration", str(duration),
                 "--sample-rate", str(rate), "--seed", "2", "-o", str(out)])
    used = min(n_in, round(prompt_s * in_rate)) / in_rate
    assert code == 0 and sf.info(str(out)).frames == round((used + duration) * rate)
