"""The LM: cached decoding equals full recomputation, banded attention, heads, cross K/V reuse."""
import pytest
import torch

from engine.backends.base import ConditionTensors
from engine.backends.torch_backend import TorchBackend
from engine.models.lm import LMConfig, LMModel, debug_lm_config
from engine.modules.kv_cache import StaticKVCache


def _lm(seed: int = 0, **overrides) -> LMModel:
    torch.manual_seed(seed)
    cfg = LMConfig(**{**debug_lm_config().to_dict(), **overrides})
    lm = LMModel(cfg).eval()
    # LayerNorms start at the identity: randomise them so the tests exercise their weights.
    with torch.no_grad():
        for name, p in lm.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return lm


def _cond(lm: LMModel, batch: int = 2, length: int = 5) -> ConditionTensors:
    g = torch.Generator().manual_seed(1)
    cross = torch.randn(batch, length, lm.cfg.cond_dim, generator=g)
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[-1] = 0  # a null (CFG) row
    return ConditionTensors(cross=cross, cross_mask=mask)


def _tokens(lm: LMModel, batch: int, steps: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, lm.card + 1, (batch, lm.n_q, steps), generator=g)


@pytest.mark.parametrize("with_prefix", [False, True])
def test_cached_step_decoding_equals_full_recomputation(with_prefix):
    lm = _lm()
    backend = TorchBackend(lm)
    cond = _cond(lm)
    if with_prefix:
        cond.prefix = torch.randn(2, 3, lm.cfg.dim, generator=torch.Generator().manual_seed(3))
    ctx = backend.prepare(cond)
    steps = 12
    cache = backend.new_cache(ctx, steps)
    seq = torch.full((2, lm.n_q, 1), lm.special_token_id)
    step_logits = []
    tokens = seq
    for _ in range(steps):
        logits, cache = backend.step(tokens, cache, ctx)  # [B, K, 1, card]
        step_logits.append(logits)
        tokens = logits.argmax(-1)  # greedy [B, K, 1]
        seq = torch.cat([seq, tokens], dim=-1)
    cached = torch.cat(step_logits, dim=2)  # [B, K, steps, card]
    with torch.no_grad():
        full = lm(seq[..., :steps], ctx.cross_kv, prefix=ctx.prefix, causal=True)
    assert cache.length == steps + (3 if with_prefix else 0)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
    assert torch.equal(cached.argmax(-1), full.argmax(-1))


def test_multi_step_chunks_after_a_cache_equal_full_recomputation():
    lm = _lm()
    backend = TorchBackend(lm)
    ctx = backend.prepare(_cond(lm))
    seq = _tokens(lm, 2, 9)
    cache = backend.new_cache(ctx, 9)
    chunks = [backend.step(seq[..., a:b], cache, ctx)[0] for a, b in ((0, 4), (4, 5), (5, 9))]
    with torch.no_grad():
        full = lm(seq, ctx.cross_kv, causal=True)
    torch.testing.assert_close(torch.cat(chunks, dim=2), full, rtol=1e-4, atol=1e-4)


def test_shared_buffer_cache_gives_the_same_logits_and_buffers_as_the_static_cache():
    """The exported step graph's attention (export/shared_kv.py, eager) against the torch cache."""
    from export.shared_kv import SharedBufferKVCache
    lm = _lm()
    cond = _cond(lm)
    kv = lm.cross_kv(lm.project_condition(cond.cross, cond.cross_mask))
    seq = _tokens(lm, 2, 6)
    static = StaticKVCache(lm.cfg.num_layers, 2, lm.cfg.num_heads, 6, lm.cfg.head_dim)
    with torch.no_grad():
        a = lm(seq[..., :4], kv, cache=static)
        b = lm(seq[..., 4:], kv, cache=static)
        shape = (2, lm.cfg.num_heads, 6, lm.cfg.head_dim)
        empty = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(lm.cfg.num_layers)]
        first = SharedBufferKVCache(empty, torch.tensor(0))
        a2 = lm(seq[..., :4], kv, cache=first)
        second = SharedBufferKVCache(first.presents, torch.tensor(4))
        b2 = lm(seq[..., 4:], kv, cache=second)
    torch.testing.assert_close(torch.cat([a, b], 2), torch.cat([a2, b2], 2), rtol=1e-5, atol=1e-5)
    assert second.presents[0][0].shape == (2, lm.cfg.num_heads, 6, lm.cfg.head_dim)
    torch.testing.assert_close(second.presents[1][1], static.values[1])


def test_static_cache_refuses_to_overflow():
    cache = StaticKVCache(1, 1, 1, 2, 4)
    k = torch.zeros(1, 1, 3, 4)
    with pytest.raises(ValueError, match="overflow"):
        cache.update(0, k, k)


def test_banded_attention_ignores_frames_beyond_the_band():
    lm = _lm(causal=False)
    backend = TorchBackend(lm)
    ctx = backend.prepare(_cond(lm))
    band, pos, frames = 2, 10, 24
    seq = _tokens(lm, 2, frames)
    base = backend.full(seq, ctx, attn_band=band)
    # With 2 layers the receptive field is 2 * band frames: change a frame farther than that.
    far = seq.clone()
    far[:, :, pos + 2 * band + 1] = (far[:, :, pos + 2 * band + 1] + 1) % lm.card
    near = seq.clone()
    near[:, :, pos + band] = (near[:, :, pos + band] + 1) % lm.card
    torch.testing.assert_close(backend.full(far, ctx, attn_band=band)[:, :, pos], base[:, :, pos])
    assert not torch.allclose(backend.full(near, ctx, attn_band=band)[:, :, pos], base[:, :, pos])
    # Without the band every frame is seen.
    assert not torch.allclose(backend.full(far, ctx, attn_band=None)[:, :, pos],
                              backend.full(seq, ctx, attn_band=None)[:, :, pos])


def test_band_also_applies_to_a_single_layer_exactly():
    lm = _lm(causal=False, num_layers=1)
    backend = TorchBackend(lm)
    ctx = backend.prepare(_cond(lm))
    seq = _tokens(lm, 2, 16)
    base = backend.full(seq, ctx, attn_band=3)
    edge, beyond = seq.clone(), seq.clone()
    edge[:, :, 8 + 3] = (edge[:, :, 8 + 3] + 1) % lm.card
    beyond[:, :, 8 + 4] = (beyond[:, :, 8 + 4] + 1) % lm.card
    assert not torch.allclose(backend.full(edge, ctx, attn_band=3)[:, :, 8], base[:, :, 8])
    torch.testing.assert_close(backend.full(beyond, ctx, attn_band=3)[:, :, 8], base[:, :, 8])


def test_single_codebook_logits_equal_the_slice_of_all_codebooks():
    lm = _lm(causal=False)
    backend = TorchBackend(lm)
    ctx = backend.prepare(_cond(lm))
    seq = _tokens(lm, 2, 7)
    every = backend.full(seq, ctx, attn_band=2)
    for k in range(lm.n_q):
        one = backend.full(seq, ctx, attn_band=2, codebook=k)
        assert one.shape == (2, 7, lm.card) and one.dtype == torch.float32
        torch.testing.assert_close(one, every[:, k])


def test_cross_attention_keys_values_are_computed_once_per_generation():
    lm = _lm()
    calls = []
    for layer in lm.transformer.layers:
        original = layer.cross_attention.project_kv
        layer.cross_attention.project_kv = lambda src, f=original: calls.append(1) or f(src)
    backend = TorchBackend(lm)
    ctx = backend.prepare(_cond(lm))
    cache = backend.new_cache(ctx, 5)
    tokens = torch.full((2, lm.n_q, 1), lm.special_token_id)
    for _ in range(5):
        logits, cache = backend.step(tokens, cache, ctx)
        tokens = logits.argmax(-1)
    backend.full(_tokens(lm, 2, 5), ctx, attn_band=None)
    assert len(calls) == lm.cfg.num_layers


def test_null_condition_rows_get_no_cross_attention_signal():
    lm = _lm()
    backend = TorchBackend(lm)
    cond = _cond(lm)
    ctx = backend.prepare(cond)
    k, v = ctx.cross_kv[0]
    assert torch.count_nonzero(k[-1]) == 0 and torch.count_nonzero(v[-1]) == 0
    assert torch.count_nonzero(k[0]) > 0


def test_bad_inputs_are_refused_with_clear_messages():
    lm = _lm()
    backend = TorchBackend(lm)
    ctx = backend.prepare(_cond(lm))
    with pytest.raises(ValueError, match="tokens must be"):
        backend.full(torch.zeros(2, 3, 4, dtype=torch.long), ctx, attn_band=None)
    with pytest.raises(ValueError, match="codebook"):
        backend.full(_tokens(lm, 2, 4), ctx, attn_band=None, codebook=4)
    with pytest.raises(ValueError, match="cross and cross_mask"):
        backend.prepare(ConditionTensors(cross=None, cross_mask=None,
                                         prefix=torch.zeros(1, 2, lm.cfg.dim)))
    with pytest.raises(ValueError, match="unknown keys"):
        LMConfig.from_dict({"dim": 8, "bogus": 1})
    assert LMConfig.from_dict(lm.cfg.to_dict()) == lm.cfg
