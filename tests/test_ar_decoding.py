"""The KV-cached AR loop on the torch backend: equivalence with full recomputation, CFG,
prompts, seeding, progress / cancellation, long form."""
import dataclasses

import pytest
import torch

from engine.backends.base import ConditionTensors
from engine.backends.torch_backend import TorchBackend
from engine.decoding.ar import generate_ar, plan_windows
from engine.decoding.delay_pattern import DelayPattern
from engine.decoding.ar_params import ARParams
from engine.decoding.sampling import cfg_mix, sample
from engine.models.lm import LMModel, debug_lm_config

B, L = 2, 5


@pytest.fixture(scope="module")
def backend():
    torch.manual_seed(0)
    lm = LMModel(debug_lm_config())
    # a sharper random model makes greedy decisions far from ties
    with torch.no_grad():
        for head in lm.linears:
            head.weight.mul_(8.0)
    return TorchBackend(lm)


def _conditions(cfg: bool) -> ConditionTensors:
    g = torch.Generator().manual_seed(1)
    cross = torch.randn(B, L, debug_lm_config().cond_dim, generator=g)
    mask = torch.ones(B, L)
    if cfg:
        cross = torch.cat([cross, torch.zeros_like(cross)])
        mask = torch.cat([mask, torch.zeros_like(mask)])
    return ConditionTensors(cross=cross, cross_mask=mask)


def _run(backend, params, frames, cfg=True, prompt=None, window=1000, stride=1,
         callback=None):
    cond = _conditions(cfg)
    return generate_ar(backend, lambda offset: cond, params, batch=B, cfg=cfg,
                       total_frames=frames, window_frames=window, stride_frames=stride,
                       prompt=prompt, progress_callback=callback)


def _recomputing_loop(backend, params, frames, cfg=True):
    """The same decoding without a KV cache: every step re-runs the whole sequence."""
    K, special = backend.n_q, backend.special_token_id
    pattern = DelayPattern.for_codebooks(K)
    seq = pattern.build(torch.full((B, K, frames), special), special)
    valid = pattern.valid_mask(frames)
    ctx = backend.prepare(_conditions(cfg))
    # one generator per row, row b seeded seed + b (sampling.row_seeds)
    gens = [torch.Generator().manual_seed(params.seed + b) for b in range(B)]
    rows = 2 * B if cfg else B
    for s in range(1, seq.shape[-1]):
        inputs = seq[:, :, :s].repeat(rows // B, 1, 1)
        logits, _ = backend.step(inputs, backend.new_cache(ctx, s), ctx)
        last = logits[:, :, -1]
        if cfg:
            last = cfg_mix(last[:B], last[B:], params.cfg_coef)
        tokens = sample(last, params, gens)
        seq[:, :, s] = torch.where(valid[:, s], tokens, seq[:, :, s])
    return pattern.revert(seq, special)[0][..., :frames]


@pytest.mark.parametrize("use_sampling", [False, True])
def test_kv_cached_loop_equals_full_recomputation(backend, use_sampling):
    params = ARParams(duration=1.0, use_sampling=use_sampling, top_k=20, seed=3)
    cached = _run(backend, params, frames=9)
    recomputed = _recomputing_loop(backend, params, frames=9)
    assert cached.shape == (B, backend.n_q, 9)
    assert torch.equal(cached, recomputed)


def test_cfg_coefficient_one_equals_the_conditional_pass_alone(backend):
    greedy = ARParams(duration=1.0, use_sampling=False, cfg_coef=1.0)
    with_null_rows = _run(backend, greedy, frames=8, cfg=True)
    conditional_only = _run(backend, greedy, frames=8, cfg=False)
    assert torch.equal(with_null_rows, conditional_only)
    guided = _run(backend, dataclasses.replace(greedy, cfg_coef=3.0), frames=8, cfg=True)
    assert not torch.equal(guided, conditional_only), "the null rows must change the result"


def test_same_seed_same_codes_different_seed_different_codes(backend):
    params = ARParams(duration=1.0, top_k=30, seed=11)
    a = _run(backend, params, frames=10)
    b = _run(backend, params, frames=10)
    c = _run(backend, dataclasses.replace(params, seed=12), frames=10)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < backend.card


def test_continuation_keeps_the_prompt_and_prefill_matches_step_by_step(backend):
    greedy = ARParams(duration=1.0, use_sampling=False)
    free = _run(backend, greedy, frames=12)
    prompt = free[..., :5].clone()
    continued = _run(backend, greedy, frames=12, prompt=prompt)
    assert torch.equal(continued[..., :5], prompt)
    # greedy decoding after its own first 5 frames must reproduce the rest exactly
    assert torch.equal(continued, free)


def test_prompt_of_other_tokens_is_returned_unchanged(backend):
    prompt = torch.randint(0, backend.card, (B, backend.n_q, 4))
    out = _run(backend, ARParams(duration=1.0, seed=0), frames=10, prompt=prompt)
    assert out.shape == (B, backend.n_q, 10)
    assert torch.equal(out[..., :4], prompt)


def test_progress_callback_runs_once_per_forward_pass(backend):
    calls = []
    _run(backend, ARParams(duration=1.0, seed=0), frames=7,
         callback=lambda d, t: calls.append((d, t)))
    steps = 7 + backend.n_q - 1
    assert calls == [(i, steps) for i in range(1, steps + 1)]
    calls.clear()
    prompt = torch.randint(0, backend.card, (B, backend.n_q, 3))
    _run(backend, ARParams(duration=1.0, seed=0), frames=7, prompt=prompt,
         callback=lambda d, t: calls.append((d, t)))
    assert len(calls) == steps - 3 and calls[-1] == (steps - 3, steps - 3)


def test_an_exception_from_the_callback_aborts_generation(backend):
    class Cancelled(Exception):
        pass

    seen = []

    def cancel_at_three(done, total):
        seen.append(done)
        if done == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        _run(backend, ARParams(duration=1.0, seed=0), frames=20, callback=cancel_at_three)
    assert seen == [1, 2, 3]


def test_long_form_past_the_window_has_the_right_length_and_progress(backend):
    calls = []
    params = ARParams(duration=1.0, seed=5)
    out = _run(backend, params, frames=31, window=12, stride=8,
               callback=lambda d, t: calls.append((d, t)))
    assert out.shape == (B, backend.n_q, 31)
    windows = plan_windows(31, 0, 12, 8)
    assert [w.offset for w in windows] == [0, 8, 16, 24]
    assert [(w.prompt_frames, w.n_frames) for w in windows] == [(0, 12), (4, 12), (4, 12), (4, 7)]
    total = calls[-1][1]
    assert calls[-1][0] == total == len(calls)
    assert total == sum(w.n_frames + backend.n_q - 1 - w.prompt_frames for w in windows)


def test_long_form_windows_continue_the_previous_window(backend):
    """Window 2 is prompted with window 1's frames after the stride: with greedy decoding, a
    single-window run prompted by those frames gives the same next frames."""
    greedy = ARParams(duration=1.0, use_sampling=False)
    out = _run(backend, greedy, frames=20, window=12, stride=8)
    again = _run(backend, greedy, frames=12, prompt=out[..., 8:12])
    assert torch.equal(out[..., 8:20], again)


def test_plan_windows_follows_audiocraft_with_a_prompt():
    # audiocraft: prompt 5, total 40, window 15, stride 10
    assert [(w.offset, w.prompt_frames, w.n_frames) for w in plan_windows(40, 5, 15, 10)] == [
        (0, 5, 15), (10, 5, 15), (20, 5, 15), (30, 5, 10)]
    with pytest.raises(ValueError, match="prompt"):
        plan_windows(10, 10, 15, 5)
    with pytest.raises(ValueError, match="extend_stride"):
        plan_windows(40, 0, 15, 15)
