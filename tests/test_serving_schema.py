"""The generation service's tensors: a request survives encoding, and decodes as it was sent."""
from fractions import Fraction

import numpy as np
import pytest

from engine import serving_schema as schema
from engine.api import build_debug_model
from engine.sample_generation import SampleRequest, generate_samples
from engine.tempo import Tempo


def _roundtrip(request: SampleRequest) -> SampleRequest:
    tensors = schema.encode_request(request)
    assert set(tensors) <= {s.name for s in schema.INPUTS}
    for spec in schema.INPUTS:
        if spec.name in tensors:
            assert tensors[spec.name].dtype == np.dtype(spec.dtype), spec.name
            # the wire's leading batch axis: one request
            assert tensors[spec.name].shape[0] == 1, spec.name
            assert tensors[spec.name].ndim == 1 + len(spec.shape), spec.name
    assert schema.request_kind(tensors) == schema.KIND_GENERATE
    return schema.decode_request(tensors)


def test_a_continuation_request_decodes_as_sent():
    prompt = np.random.default_rng(0).standard_normal((4800, 2)).astype(np.float32)
    sent = SampleRequest("house, bpm: 120.5", {"mode": "magnet", "seed": 7, "temperature": 0.9,
                                               "decoding_steps": (10, 5, 5, 5)},
                         96000, 48000, Tempo(Fraction(241, 2), 3, 1.25), prompt, 48000)
    got = _roundtrip(sent)
    assert got.tempo == sent.tempo and got.tempo.bpm == Fraction(241, 2)
    assert got.params == sent.params and isinstance(got.params["decoding_steps"], tuple)
    assert (got.description, got.samples, got.sample_rate, got.prompt_rate) == \
        (sent.description, sent.samples, sent.sample_rate, sent.prompt_rate)
    np.testing.assert_array_equal(got.prompt, prompt)
    assert got.melody is None


def test_a_decoded_request_generates_what_the_original_does():
    model = build_debug_model()
    sent = SampleRequest("x, bpm: 120", {"mode": "ar", "seed": 3}, 24000, 48000, Tempo(120))
    want = generate_samples(model, sent, lambda f: None)
    np.testing.assert_array_equal(generate_samples(model, _roundtrip(sent), lambda f: None), want)


def test_describe_and_model_info():
    model = build_debug_model()
    assert schema.request_kind(schema.describe_request()) == schema.KIND_DESCRIBE
    info = schema.model_info(model)
    assert schema.decode_info(schema.encode_info(info)) == info
    assert info.sample_rate == model.sample_rate and info.supported_modes == ("ar",)


def test_responses_decode_as_sent():
    audio = np.random.default_rng(1).standard_normal((300, 2)).astype(np.float32)
    final = schema.audio_response(audio, 48000)
    assert final["AUDIO"].shape == (1, 300, 2)
    np.testing.assert_array_equal(schema.decode_audio(final), audio)
    assert schema.decode_progress(final) is None
    step = schema.progress_response(0.25)
    assert schema.decode_progress(step) == 0.25 and schema.decode_audio(step) is None


def test_malformed_requests_are_named():
    with pytest.raises(ValueError, match="KIND 'train'"):
        schema.request_kind({"KIND": np.array([b"train"], dtype=object)})
    tensors = schema.encode_request(SampleRequest("x", {}, 10, 48000, Tempo(120)))
    del tensors["SAMPLES"]
    with pytest.raises(ValueError, match="needs SAMPLES"):
        schema.decode_request(tensors)
