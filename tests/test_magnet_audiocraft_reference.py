"""Greedy MAGNeT from a prompt that is not a whole number of spans gives audiocraft's codes.

The reference below is audiocraft's ``MagnetLMModel._generate_stage`` (models/lm_magnet.py at
896ec7c, nonoverlap spans, greedy) written out here: the model's argmax at every frame, a span
scored over all its frames (prompt frames included, with the probability of the model's own
choice there), the prompt restored after each mask. It drives the same LM weights, loaded from
an audiocraft-layout checkpoint, by whole-sequence forwards of all codebooks.
"""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.decoding.magnet import generate_magnet
from engine import MAGNeT
from test_magnet_decoding import _tiny_t5_dir, _write_audiocraft_magnet

PROMPT_FRAMES = 26   # 8 whole spans of 3 and 2 frames of the 9th
SEGMENT_FRAMES = 60
STEPS = (5, 3, 3, 3)


def audiocraft_greedy(lm, cross_kv, prompt, n_frames, steps, span_len, scoring, max_cfg, min_cfg,
                      temp, band):
    """audiocraft's masked decoding, greedy, CFG on [cond; null] rows: codes [B, K, T]."""
    B, K, P = prompt.shape
    mask_id = lm.special_token_id
    gen = torch.full((B, K, n_frames), mask_id, dtype=torch.long)
    gen[..., :P] = prompt
    n_chunks = n_frames // span_len
    for stage, n_steps in enumerate(steps):
        stage_seq = torch.full((B, 1, n_frames), mask_id, dtype=torch.long)
        n_prompt_chunks = P // span_len
        scores = torch.zeros(B, 1, n_chunks)
        scores[..., :n_prompt_chunks] = -1e4
        to_generate = n_chunks - n_prompt_chunks
        for timestep, steps_left in zip(torch.linspace(0, 1, n_steps), reversed(range(n_steps))):
            mask_p = torch.cos(timestep * math.pi * 0.5)
            num_masked = max(int((mask_p * to_generate).item()), 1)
            masked = scores.topk(num_masked, dim=-1).indices
            chunks_mask = torch.zeros(B, 1, n_chunks, dtype=torch.bool).scatter(2, masked, True)
            stage_seq[torch.repeat_interleave(chunks_mask, span_len, dim=-1)] = mask_id
            stage_seq[..., :P] = prompt[:, stage, :].unsqueeze(1)
            gen[:, [stage], :] = stage_seq
            with torch.inference_mode():
                all_logits = lm(torch.cat([gen, gen]), cross_kv, band=None if stage == 0 else band,
                                causal=False)                                # [2B, K, T, card]
            cond, uncond = all_logits.split(B, dim=0)
            coef = float(mask_p) * max_cfg + (1 - float(mask_p)) * min_cfg
            logits = (uncond + (cond - uncond) * coef)[:, stage].unsqueeze(1)  # [B, 1, T, card]
            t = temp * (steps_left / n_steps)
            probs = torch.softmax(logits / max(t, 1e-2), dim=-1)
            sampled = torch.argmax(logits, dim=-1, keepdim=True)
            stage_seq = torch.where(stage_seq == mask_id, sampled[..., 0], stage_seq)
            gen[:, [stage], :] = stage_seq
            sampled_probs = torch.gather(probs, 3, sampled)[..., 0]          # [B, 1, T]
            per_span = sampled_probs.reshape(B, 1, n_chunks, -1)
            scores = (1 - per_span.max(dim=-1)[0] if scoring == "max"
                      else (-per_span.log()).sum(dim=-1))
            scores = scores.masked_fill(~chunks_mask, -1e4)
    return gen


@pytest.fixture(scope="module")
def audiocraft_magnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("ac")
    t5_dim = _tiny_t5_dir(root / "t5")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BARFORGE_T5_DIR", str(root / "t5"))
        _write_audiocraft_magnet(root / "magnet-tiny-10secs", t5_dim)
        yield MAGNeT.get_pretrained(str(root / "magnet-tiny-10secs"))


def _ours_and_theirs(model, scoring, prompt_frames):
    model.set_generation_params(mode="magnet", use_sampling=False, decoding_steps=STEPS,
                                span_scoring=scoring, seed=0)
    p = model.magnet_params
    prompt = torch.randint(0, model.lm.card, (2, model.lm.n_q, prompt_frames),
                           generator=torch.Generator().manual_seed(prompt_frames))
    descriptions = ["jazz piano trio", "heavy guitar riff"]
    rows = model._condition_rows(model._text(descriptions), None, True)
    ours = generate_magnet(model.backend, rows, p, batch=2, cfg=True, n_frames=SEGMENT_FRAMES,
                           attn_band=model.attn_band, prompt=prompt)
    lm = model.lm
    cross_kv = lm.cross_kv(lm.project_condition(rows.cross, rows.cross_mask, None))
    theirs = audiocraft_greedy(lm, cross_kv, prompt, SEGMENT_FRAMES, STEPS, 3, scoring,
                               p.max_cfg_coef, p.min_cfg_coef, p.temperature, model.attn_band)
    assert torch.equal(ours[..., :prompt_frames], prompt)
    return ours, theirs


@pytest.mark.parametrize("scoring", ["max", "prod"])
def test_greedy_codes_from_a_26_frame_prompt_are_audiocrafts(audiocraft_magnet, scoring):
    assert audiocraft_magnet.span_len == 3 and PROMPT_FRAMES % 3
    ours, theirs = _ours_and_theirs(audiocraft_magnet, scoring, PROMPT_FRAMES)
    assert torch.equal(ours, theirs)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, SEGMENT_FRAMES - 4), st.sampled_from(["max", "prod"]))
def test_greedy_codes_match_audiocraft_for_prompts_of_any_length(audiocraft_magnet, prompt_frames,
                                                                 scoring):
    ours, theirs = _ours_and_theirs(audiocraft_magnet, scoring, prompt_frames)
    assert torch.equal(ours, theirs)
