"""The MiniLM text encoder (engine/conditioners/bert.py) computes what transformers computes.

bert.py exists so that the default model starts without importing transformers' modelling
stack; this proves it is the same function on the same weights: token ids and masks equal to
transformers' tokenizer, hidden states equal to ``transformers.BertModel`` on every real token.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.conditioners.text import MiniLMTextEncoder, debug_text_encoder, minilm_dir


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoTokenizer, BertModel
    return BertModel.from_pretrained(minilm_dir()).eval(), AutoTokenizer.from_pretrained(minilm_dir())


@pytest.fixture(scope="module")
def ours() -> MiniLMTextEncoder:
    return MiniLMTextEncoder()


def _compare(ours: MiniLMTextEncoder, reference, texts: list[str]) -> None:
    model, tokenizer = reference
    hidden, mask = ours.encode(texts)
    inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=512)
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
    real = inputs["attention_mask"].bool()
    assert hidden.shape == expected.shape
    for i, text in enumerate(texts):          # an empty text is the null condition: mask all 0
        assert mask[i].tolist() == ([0] * mask.shape[1] if text == "" else real[i].long().tolist())
    torch.testing.assert_close(hidden[real], expected[real], atol=2e-5, rtol=1e-4)


def test_captions_long_and_unusual_texts(ours, reference) -> None:
    _compare(ours, reference, ["dusty boom-bap drums, vinyl crackle. bpm: 90.0", "",
                               "Ça sonne très bien: 東京 🎵 in F# minor", "x " * 700])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=3))
def test_any_text_batch(ours, reference, texts: list[str]) -> None:
    _compare(ours, reference, texts)


def test_debug_encoder_is_seeded_and_masks_empty_text() -> None:
    a, b = debug_text_encoder(seed=3), debug_text_encoder(seed=3)
    ha, ma = a.encode(["lofi piano", ""])
    hb, _ = b.encode(["lofi piano", ""])
    assert torch.equal(ha, hb) and ma[1].sum() == 0 and ma[0].sum() > 0
    assert not torch.equal(ha, debug_text_encoder(seed=4).encode(["lofi piano", ""])[0])
