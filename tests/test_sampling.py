"""sample() and cfg_mix(): greedy, top-k, top-p, temperature, seeding; ARParams validation."""
import dataclasses

import pytest
import torch

from engine.decoding.ar_params import ARParams
from engine.decoding.sampling import cfg_mix, sample


def _params(**kw):
    return ARParams(duration=1.0, **kw)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_cfg_with_coefficient_one_is_the_conditional_logits():
    cond, uncond = torch.randn(2, 4, 64), torch.randn(2, 4, 64)
    torch.testing.assert_close(cfg_mix(cond, uncond, 1.0), cond)
    # the formula itself, with the reference operation order
    assert torch.equal(cfg_mix(cond, uncond, 3.0), uncond + (cond - uncond) * 3.0)


def test_greedy_when_sampling_is_off_or_temperature_zero():
    logits = torch.randn(3, 4, 100)
    want = logits.argmax(-1)
    assert torch.equal(sample(logits, _params(use_sampling=False), _gen()), want)
    assert torch.equal(sample(logits, _params(temperature=0.0), _gen()), want)


def test_top_k_only_draws_among_the_k_best():
    logits = torch.randn(1, 50, 200)
    top5 = logits.topk(5, dim=-1).indices
    for seed in range(5):
        tokens = sample(logits, _params(top_k=5), _gen(seed))
        assert tokens.shape == (1, 50)
        assert bool((top5 == tokens.unsqueeze(-1)).any(-1).all())


def test_top_k_one_is_greedy():
    logits = torch.randn(2, 4, 300)
    assert torch.equal(sample(logits, _params(top_k=1), _gen()), logits.argmax(-1))


def test_top_p_overrides_top_k_and_keeps_the_nucleus():
    # probabilities 0.5, 0.3, 0.15, 0.05: the 0.7 nucleus is the first two tokens
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, 4).contiguous()
    tokens = sample(logits, _params(top_p=0.7, top_k=1), _gen())
    assert set(tokens.unique().tolist()) == {0, 1}
    share = (tokens == 0).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.05


def test_full_distribution_when_top_k_and_top_p_are_zero():
    probs = torch.tensor([0.6, 0.3, 0.1])
    tokens = sample(probs.log().expand(6000, 3).contiguous(), _params(top_k=0), _gen(1))
    freq = torch.bincount(tokens, minlength=3).float() / 6000
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)


def test_high_temperature_flattens_low_temperature_sharpens():
    logits = torch.tensor([2.0, 0.0]).expand(4000, 2).contiguous()
    hot = (sample(logits, _params(temperature=100.0, top_k=0), _gen()) == 0).float().mean()
    cold = (sample(logits, _params(temperature=0.1, top_k=0), _gen()) == 0).float().mean()
    assert 0.4 < hot < 0.6
    assert cold > 0.99


def test_same_seed_same_tokens_different_seed_different_tokens():
    logits = torch.randn(2, 4, 500)
    p = _params(top_k=250)
    a, b, c = (sample(logits, p, _gen(s)) for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("field,value", [
    ("duration", 0.0), ("duration", -1.0), ("duration", float("nan")), ("temperature", -0.1),
    ("top_k", -1), ("top_k", 2.5), ("top_p", 1.5), ("cfg_coef", -1.0), ("extend_stride", 0.0),
    ("seed", -3), ("seed", 1.5), ("use_sampling", "yes")])
def test_bad_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(_params(), **{field: value})


def test_params_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _params().top_k = 3  # type: ignore[misc]
