"""Per-row random streams: a request decoded in a batch gets the codes it gets alone.

Each row of a batch samples from its own generator, seeded by its own seed
(engine/decoding/sampling.py ``RowGenerators``), on both backends (torch, onnxruntime) and in
every decoding mode. Rows must also read text conditions of the same length
(``MusicGen.text_length``): the LM attends to padded text positions, so padding changes a clip;
``batch_key`` keeps such requests apart. Measured on the debug models: with equal text lengths
0 of 7,200 codes differ between batched and alone (torch and onnxruntime; ar, magnet, hybrid),
so the checks below are exact.
"""
import numpy as np
import pytest
import torch

from engine.api import build_debug_model, debug_magnet, load_model
from engine.decoding.ar_params import ARParams
from engine.decoding.sampling import RowGenerators, row_seeds
from engine.sample_generation import SampleRequest, batch_key, generate_batch, generate_samples
from engine.tempo import Tempo
from export.bundle import export_bundle

DESCRIPTIONS = ["drums", "bass", "piano"]   # the same text length in the debug tokenizer
SEEDS = (3, 11, 7)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> model: the debug MusicGen and MAGNeT, each in PyTorch and as an ONNX bundle."""
    out = {"debug/torch": build_debug_model(), "magnet/torch": debug_magnet()}
    for name in ("debug", "magnet"):
        bundle = tmp_path_factory.mktemp(name) / "bundle"
        export_bundle(out[f"{name}/torch"], bundle, log=lambda s: None)
        out[f"{name}/onnx"] = load_model(str(bundle), provider="cpu")
    return out


def _codes(model, descriptions, seed, mode):
    extra = {} if mode is None else {"mode": mode}
    model.set_generation_params(duration=1.5, seed=seed, **extra)
    return model.generate(descriptions, return_tokens=True)[1]


@pytest.mark.parametrize("name, mode", [("debug/torch", None), ("debug/onnx", None),
                                        ("magnet/torch", "magnet"), ("magnet/onnx", "magnet"),
                                        ("magnet/torch", "hybrid"), ("magnet/onnx", "hybrid")])
def test_a_batched_row_gets_the_codes_it_gets_alone(models, name, mode):
    model = models[name]
    assert len({model.text_length(d) for d in DESCRIPTIONS}) == 1
    batched = _codes(model, DESCRIPTIONS, SEEDS, mode)
    for row, (description, seed) in enumerate(zip(DESCRIPTIONS, SEEDS)):
        alone = _codes(model, [description], seed, mode)
        assert torch.equal(batched[row], alone[0]), (name, mode, row)
    # and the seeds matter: two rows with one prompt and different seeds differ
    assert not torch.equal(*_codes(model, ["drums", "drums"], (3, 4), mode))


def test_one_int_seed_seeds_row_b_with_seed_plus_b(models):
    model = models["debug/torch"]
    batched = _codes(model, DESCRIPTIONS, 5, None)
    assert torch.equal(batched[2], _codes(model, [DESCRIPTIONS[2]], 7, None)[0])


def test_different_text_lengths_change_codes_and_batch_key_keeps_them_apart(models):
    model = models["debug/torch"]
    longer = "drums loud"
    assert model.text_length(longer) != model.text_length("bass")
    batched = _codes(model, [longer, "bass"], (3, 11), None)
    assert not torch.equal(batched[1], _codes(model, ["bass"], 11, None)[0])
    tempo = Tempo(120)
    a = SampleRequest(longer, {"seed": 3}, 24000, 48000, tempo)
    b = SampleRequest("bass", {"seed": 11}, 24000, 48000, tempo)
    assert batch_key(model, a) != batch_key(model, b)
    with pytest.raises(ValueError, match="cannot share one decoding loop"):
        generate_batch(model, [a, b], lambda f: None)


def test_generate_batch_gives_each_request_its_clip_alone(models):
    model = models["debug/onnx"]
    tempo = Tempo(120)
    # one second: at this length the codec's batched decode rounded differently in the last
    # bit (1.2e-7), which is why the model decodes codes row by row
    requests = [SampleRequest(d, {"mode": "ar", "seed": s}, 48000, 48000, tempo)
                for d, s in zip(DESCRIPTIONS, SEEDS)]
    assert len({batch_key(model, r) for r in requests}) == 1
    clips = generate_batch(model, requests, lambda f: None)
    for request, clip in zip(requests, clips):
        np.testing.assert_array_equal(clip, generate_samples(model, request, lambda f: None))
    other = SampleRequest("drums", {"mode": "ar", "seed": 3}, 96000, 48000, tempo)
    assert batch_key(model, other) != batch_key(model, requests[0])   # another length


def test_row_seeds_and_their_refusals():
    assert row_seeds(9, 3) == [9, 10, 11] and row_seeds(None, 2) == [None, None]
    assert row_seeds((4, None), 2) == [4, None]
    with pytest.raises(ValueError, match="seed has 2 entries, one per row of a batch of 3"):
        RowGenerators((1, 2), 3)
    with pytest.raises(ValueError, match="each entry of seed must be None or an integer"):
        ARParams(duration=1.0, seed=(1, -2))
