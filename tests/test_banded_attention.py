"""Banded attention computed only inside the band equals the masked full attention."""
import pytest
import torch
import torch.nn.functional as F

import engine.modules.transformer as transformer
from engine.backends.base import ConditionTensors
from engine.backends.torch_backend import TorchBackend
from engine.models.lm import LMConfig, LMModel, debug_lm_config
from engine.modules.banded_attention import (banded_attention, banded_attention_traced,
                                             banded_pays)
from engine.modules.transformer import self_attention_mask


def _qkv(steps: int, seed: int = 0, batch: int = 2, heads: int = 3, head_dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, batch, heads, steps, head_dim, generator=g).unbind(0)  # [B, H, T, Dh]


def _masked(q, k, v, band):
    mask = self_attention_mask(q.shape[2], 0, False, band, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("steps, band, block", [
    (498, 5, 32), (100, 5, 32), (64, 5, 16), (33, 5, 32), (31, 1, 32), (100, 3, 7),
    (7, 0, 3), (50, 0, 8), (1, 0, 32), (1, 5, 32), (12, 5, 32), (10, 20, 4), (9, 8, 2),
    (45, 2, 1), (40, 5, 64),
])
def test_equals_the_masked_full_attention(steps, band, block):
    q, k, v = _qkv(steps)
    out = banded_attention(q, k, v, band, block)
    assert out.shape == q.shape
    torch.testing.assert_close(out, _masked(q, k, v, band), rtol=1e-5, atol=1e-5)


def test_strided_inputs_from_a_packed_projection_are_handled():
    # The transformer hands over q, k, v as permuted views of one [B, T, 3, H, Dh] tensor.
    qkv = torch.randn(2, 90, 3, 4, 16, generator=torch.Generator().manual_seed(4))
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, Dh], not contiguous
    torch.testing.assert_close(banded_attention(q, k, v, 5), _masked(q, k, v, 5),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pos", [0, 31, 32, 50, 99])
def test_a_frame_beyond_the_band_does_not_change_a_position(pos):
    band, steps = 5, 100
    q, k, v = _qkv(steps, seed=1)
    base = banded_attention(q, k, v, band, block=16)
    for frame in (pos - band - 1, pos + band + 1):
        if not 0 <= frame < steps:
            continue
        k2, v2 = k.clone(), v.clone()
        k2[:, :, frame] += 3.0
        v2[:, :, frame] += 3.0
        assert torch.equal(banded_attention(q, k2, v2, band, block=16)[:, :, pos],
                           base[:, :, pos])
    for frame in (pos - band, pos + band):
        if not 0 <= frame < steps:
            continue
        v2 = v.clone()
        v2[:, :, frame] += 3.0
        assert not torch.allclose(banded_attention(q, k, v2, band, block=16)[:, :, pos],
                                  base[:, :, pos])


def test_bad_arguments_are_refused_by_name():
    q, k, v = _qkv(10)
    with pytest.raises(ValueError, match="band"):
        banded_attention(q, k, v, -1)
    with pytest.raises(ValueError, match="block"):
        banded_attention(q, k, v, 2, block=0)
    with pytest.raises(ValueError, match="q, k, v"):
        banded_attention(q, k[:, :, :5], v, 2)


def test_the_band_pays_only_on_sequences_well_longer_than_a_window():
    assert banded_pays(498, 5)
    assert not banded_pays(30, 5)
    assert not banded_pays(99, 5)
    assert not banded_pays(498, 400)


# ---------------------------------------------------------------- in the LM


def _lm(num_layers: int = 2) -> LMModel:
    torch.manual_seed(0)
    cfg = LMConfig(**{**debug_lm_config().to_dict(), "causal": False, "num_layers": num_layers})
    return LMModel(cfg).eval()


def _ctx(backend: TorchBackend, lm: LMModel):
    g = torch.Generator().manual_seed(1)
    cross = torch.randn(2, 4, lm.cfg.cond_dim, generator=g)
    return backend.prepare(ConditionTensors(cross=cross, cross_mask=torch.ones(2, 4,
                                                                              dtype=torch.int64)))


def _tokens(lm: LMModel, steps: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, lm.card + 1, (2, lm.n_q, steps), generator=g)


@pytest.fixture
def calls(monkeypatch):
    """Counts the banded calls the transformer makes."""
    seen = []

    def spy(q, k, v, band):
        seen.append(band)
        return banded_attention(q, k, v, band)

    monkeypatch.setattr(transformer, "banded_attention", spy)
    return seen


def test_lm_logits_equal_with_the_fast_path_on_and_off(calls, monkeypatch):
    lm = _lm()
    backend = TorchBackend(lm)
    ctx = _ctx(backend, lm)
    seq = _tokens(lm, 200)
    fast = backend.full(seq, ctx, attn_band=5)
    assert calls == [5] * lm.cfg.num_layers  # the fast path ran, once per layer
    monkeypatch.setattr(transformer, "banded_pays", lambda steps, band: False)
    masked = backend.full(seq, ctx, attn_band=5)
    assert len(calls) == lm.cfg.num_layers  # ... and not with it switched off
    torch.testing.assert_close(fast, masked, rtol=1e-5, atol=1e-5)


def test_prefix_frames_count_in_the_band_with_the_fast_path(calls, monkeypatch):
    lm = _lm()
    backend = TorchBackend(lm)
    ctx = _ctx(backend, lm)
    ctx.prefix = torch.randn(2, 3, lm.cfg.dim, generator=torch.Generator().manual_seed(3))
    seq = _tokens(lm, 180)
    fast = backend.full(seq, ctx, attn_band=5, codebook=1)
    assert calls
    monkeypatch.setattr(transformer, "banded_pays", lambda steps, band: False)
    torch.testing.assert_close(fast, backend.full(seq, ctx, attn_band=5, codebook=1),
                               rtol=1e-5, atol=1e-5)


def test_one_layer_lm_ignores_a_frame_beyond_the_band_with_the_fast_path(calls):
    lm = _lm(num_layers=1)
    backend = TorchBackend(lm)
    ctx = _ctx(backend, lm)
    seq = _tokens(lm, 200)
    pos = 64
    base = backend.full(seq, ctx, attn_band=5)
    far, near = seq.clone(), seq.clone()
    far[:, :, pos + 6] = (far[:, :, pos + 6] + 1) % lm.card
    near[:, :, pos + 5] = (near[:, :, pos + 5] + 1) % lm.card
    assert torch.equal(backend.full(far, ctx, attn_band=5)[:, :, pos], base[:, :, pos])
    assert not torch.equal(backend.full(near, ctx, attn_band=5)[:, :, pos], base[:, :, pos])
    assert len(calls) == 3


def test_causal_cached_and_traced_runs_keep_the_mask_path(calls):
    lm = _lm()
    seq = _tokens(lm, 200)
    with torch.no_grad():
        kv = lm.cross_kv(lm.project_condition(torch.randn(2, 4, lm.cfg.cond_dim),
                                              torch.ones(2, 4, dtype=torch.int64)))
        lm(seq, kv, band=5, causal=True)
        lm(seq, kv, band=None, causal=False)
        lm(seq[:, :, :20], kv, band=5, causal=False)  # too short to pay
    assert calls == []

    class Full(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = lm

        def forward(self, tokens):
            return self.lm(tokens, kv, band=5, causal=False)

    with torch.no_grad():
        torch.jit.trace(Full(), (seq,), check_trace=False)
    assert calls == []  # tracing (ONNX export) records the masked graph


@pytest.mark.parametrize("steps, band", [
    (1, 0), (1, 5), (7, 0), (31, 1), (33, 5), (64, 5), (100, 3), (498, 5), (10, 20), (40, 39),
    (40, 38), (50, 1 << 30),
])
def test_traced_form_equals_the_masked_full_attention(steps, band):
    q, k, v = _qkv(steps)
    out = banded_attention_traced(q, k, v, torch.tensor(band))
    assert out.shape == q.shape
    torch.testing.assert_close(out, _masked(q, k, v, band), rtol=1e-5, atol=1e-5)


def test_traced_form_traced_once_serves_every_length_and_band():
    """One trace (as the lm_full export records it) stays right at other sizes and bands,
    stage 0's band past the length included: no size was frozen into it."""
    q, k, v = _qkv(70)
    traced = torch.jit.trace(banded_attention_traced, (q, k, v, torch.tensor(5)),
                             check_trace=False)
    for steps, band in ((70, 5), (200, 5), (200, 2), (90, 200), (3, 1), (33, 0)):
        q, k, v = _qkv(steps, seed=steps)
        torch.testing.assert_close(traced(q, k, v, torch.tensor(band)), _masked(q, k, v, band),
                                   rtol=1e-5, atol=1e-5)
