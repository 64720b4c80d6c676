"""/barforge/generate with a melody (the protocol's additive melody options) on the debug
melody model, in process: the clip has exactly the bars asked, and the chroma the model
received is that of the captured bars cut on the session's bar lines."""
import math

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from bridge import osc_protocol as proto
from engine.conditioners.chroma import ChromaExtractor, match_length
from engine.tempo import Tempo
from plugin_host.shm import HostSegment
from tests.bridge_inproc import InProcess, dgram

BPM, METER, RATE, CAPTURE_RATE, MODEL_RATE = 120, 4, 44100, 16000, 32000
FIRST_BEAT = 8.0        # the session beat of the ring's first frame


class RecordingBackend:
    """The model's real backend, recording the condition rows each generation prepares."""

    def __init__(self, inner):
        self.inner, self.conditions = inner, []

    def prepare(self, cond):
        self.conditions.append(cond)
        return self.inner.prepare(cond)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def melody_bridge(tmp_path_factory):
    b = InProcess(tmp_path_factory.mktemp("renders"), model="debug-melody",
                  capture_frames=CAPTURE_RATE * 12)
    b.renderer.model.backend = RecordingBackend(b.renderer.model.backend)
    b.bridge.jobs.start()
    b.handle(dgram("/barforge/transport", float(BPM), METER, RATE))
    yield b
    b.close()


def _beat_notes(beats: int) -> np.ndarray:
    """A different pitch class on every beat (mono, at CAPTURE_RATE)."""
    per_beat = CAPTURE_RATE * 60 // BPM
    t = np.arange(per_beat) / CAPTURE_RATE
    return np.concatenate([np.sin(2 * np.pi * 261.63 * 2 ** (((5 * b) % 12) / 12) * t)
                           for b in range(beats)]).astype(np.float32) * 0.5


def _capture(b, audio: np.ndarray) -> float:
    """Reset the ring and write ``audio`` from FIRST_BEAT in host-sized blocks; the end beat."""
    b.handle(dgram("/barforge/capture", CAPTURE_RATE))
    host = HostSegment.attach(b.segment.name)
    pos = 0
    for block in np.array_split(audio, math.ceil(audio.shape[0] / 4096)):
        pos += block.shape[0]
        host.write_capture(block, FIRST_BEAT + pos / CAPTURE_RATE * BPM / 60)
    host.close()
    b.drain()
    return FIRST_BEAT + audio.shape[0] / CAPTURE_RATE * BPM / 60


def _chroma(mono: np.ndarray, frames: int) -> torch.Tensor:
    wav = torch.from_numpy(soxr.resample(mono, CAPTURE_RATE, MODEL_RATE))[None]
    return match_length(ChromaExtractor(MODEL_RATE)(wav), frames)[0]


@pytest.mark.parametrize("melody_bars, clip_bars, beats_after", [(2, 2, 2.0), (1, 2, 3.5)])
def test_a_capture_melody_gives_the_exact_bars_and_the_captured_bars_chroma(
        melody_bridge, melody_bars, clip_bars, beats_after):
    b = melody_bridge
    beats = int(4 + METER * melody_bars + math.ceil(beats_after))
    audio = _beat_notes(beats)[:int((4 + METER * melody_bars + beats_after) * CAPTURE_RATE / 2)]
    end_beat = _capture(b, audio)
    job = f"m{melody_bars}"
    b.handle(dgram("/barforge/generate", job, "tune", clip_bars, "melody", "capture",
                   "melody_bars", melody_bars, "seed", 3))
    replies = b.until_final(job)
    done = [p for a, p in replies if a == "/barforge/done"]
    assert len(done) == 1, replies
    frames = Tempo(BPM, METER).frames(clip_bars, RATE)
    assert done[0][2] == frames and b.segment.read_slot(done[0][1]).frames == frames
    assert sf.info(done[0][6]).frames == frames
    # the bars that end on the last bar line before the end of the capture
    last_bar = math.floor(end_beat / METER) * METER
    first = round((last_bar - METER * melody_bars - FIRST_BEAT) * CAPTURE_RATE / 2)
    bars = audio[first:first + Tempo(BPM, METER).frames(melody_bars, CAPTURE_RATE)]
    received = b.renderer.model.backend.conditions[-1].chroma[0]
    assert torch.equal(received, _chroma(bars, received.shape[0]))
    shifted = audio[first + CAPTURE_RATE // 2:first + CAPTURE_RATE // 2 + bars.shape[0]]
    assert not torch.equal(received, _chroma(shifted, received.shape[0]))  # a beat late differs


def test_a_slot_melody_uses_that_clip(melody_bridge):
    b = melody_bridge
    b.handle(dgram("/barforge/generate", "s0", "first", 1, "seed", 1))
    slot = [p for a, p in b.until_final("s0") if a == "/barforge/done"][0][1]
    b.handle(dgram("/barforge/generate", "s1", "over it", 1, "melody", "slot",
                   "melody_slot", slot, "seed", 2))
    done = [p for a, p in b.until_final("s1") if a == "/barforge/done"]
    assert done and done[0][2] == Tempo(BPM, METER).frames(1, RATE)
    clip = b.segment.read_slot(slot)
    wav = torch.from_numpy(soxr.resample(clip.audio.mean(axis=1), RATE, MODEL_RATE))[None]
    received = b.renderer.model.backend.conditions[-1].chroma[0]
    assert torch.equal(received, match_length(ChromaExtractor(MODEL_RATE)(wav),
                                              received.shape[0])[0])


def test_an_empty_slot_or_too_little_capture_ends_the_job_with_an_error(tmp_path):
    b = InProcess(tmp_path, model="debug-melody", capture_frames=CAPTURE_RATE * 12)
    try:
        b.bridge.jobs.start()
        b.handle(dgram("/barforge/transport", float(BPM), METER, RATE))
        b.handle(dgram("/barforge/generate", "e0", "x", 1, "melody", "capture"))
        assert b.drain()[-1][1][:2] == ["e0", "no_capture"]    # before any /barforge/capture
        b.handle(dgram("/barforge/generate", "e1", "x", 1, "melody", "slot", "melody_slot", 2))
        errors = [p for a, p in b.until_final("e1") if a == "/barforge/error"]
        assert errors and errors[0][1] == "bad_argument" and "holds no clip" in errors[0][2]
        _capture(b, _beat_notes(7))     # 3.5 s: one whole bar before the last bar line
        b.handle(dgram("/barforge/generate", "e2", "x", 1, "melody", "capture", "melody_bars", 2))
        errors = [p for a, p in b.until_final("e2") if a == "/barforge/error"]
        assert errors and errors[0][1] == "no_capture"
        b.handle(dgram("/barforge/generate", "e3", "x", 1, "melody", "slot", "melody_slot", 99))
        assert b.drain() == [("/barforge/error", ["e3", "bad_argument",
                                                  "option melody_slot must be in 0..3, got 99"])]
    finally:
        b.close()


def test_a_model_without_melody_input_refuses_the_option(tmp_path):
    b = InProcess(tmp_path)
    try:
        b.handle(dgram("/barforge/transport", 120.0, 4, 44100))
        b.handle(dgram("/barforge/capture", 44100))
        b.drain()
        b.handle(dgram("/barforge/generate", "n1", "x", 1, "melody", "capture"))
        (address, (job, code, message)), = b.drain()
        assert (address, job, code) == ("/barforge/error", "n1", "bad_argument")
        assert "takes no melody" in message
    finally:
        b.close()


@pytest.mark.parametrize("args, message", [
    (["melody", "stems"], "option melody must be one of capture, slot"),
    (["melody_bars", 2], "melody_bars needs option melody capture"),
    (["melody", "slot"], "melody slot and option melody_slot go together"),
    (["melody", "capture", "melody_slot", 1], "melody slot and option melody_slot go together"),
    (["melody", "capture", "melody_bars", 65], "melody_bars must be in 1..64"),
])
def test_bad_melody_options_are_refused_naming_the_option(args, message):
    (reply,) = proto.parse_packet(dgram("/barforge/generate", "j", "p", 1, *args))
    assert isinstance(reply, proto.ErrorReply) and reply.code == "bad_argument"
    assert message in reply.message


def test_continue_refuses_a_melody():
    (reply,) = proto.parse_packet(dgram("/barforge/continue", "j", 1, "melody", "capture"))
    assert isinstance(reply, proto.ErrorReply) and "generate only" in reply.message
