"""MAGNeT's schedules, span scoring and span choice against values worked out by hand."""
import math

import pytest
import torch

from engine.decoding.magnet_params import MagnetParams
from engine.decoding.masking import (FROZEN_SCORE, annealed_cfg_coef, annealed_temperature,
                                     choose_spans_nonoverlap, choose_spans_stride1, freeze,
                                     mask_probability, num_masked, span_scores_max,
                                     span_scores_prod, spans_to_token_mask)


def test_cosine_mask_probability_runs_from_one_to_zero():
    assert mask_probability(0, 10) == 1.0
    assert mask_probability(3, 10) == pytest.approx(math.sqrt(3) / 2, abs=1e-6)  # cos(pi/6)
    assert mask_probability(6, 10) == pytest.approx(0.5, abs=1e-6)  # cos(pi/3)
    assert abs(mask_probability(9, 10)) < 1e-6  # cos(pi/2)
    assert mask_probability(0, 1) == 1.0  # a one-step stage masks everything once


def test_mask_probability_rejects_a_step_outside_the_stage():
    with pytest.raises(ValueError, match="step"):
        mask_probability(10, 10)


def test_num_masked_truncates_and_keeps_at_least_one():
    # 498 frames -> 166 spans of 3; cos(pi/6) * 166 = 143.76 -> 143; cos(pi/38) * 166 = 165.43
    assert num_masked(mask_probability(0, 20), 166) == 166
    assert num_masked(mask_probability(1, 20), 166) == 165
    assert num_masked(mask_probability(3, 10), 166) == 143
    # float32 cos(pi/3) is 0.49999997, so 82 spans, not 83: the count audiocraft's float32 gives
    assert num_masked(mask_probability(6, 10), 166) == 82
    assert num_masked(mask_probability(9, 10), 166) == 1  # ~0 * 166 -> at least one span


def test_cfg_coefficient_is_annealed_with_the_masking_rate():
    assert annealed_cfg_coef(1.0, 10.0, 1.0) == 10.0
    assert annealed_cfg_coef(0.5, 10.0, 1.0) == 5.5
    assert annealed_cfg_coef(math.sqrt(3) / 2, 10.0, 1.0) == pytest.approx(8.794228634)
    assert annealed_cfg_coef(0.0, 10.0, 1.0) == 1.0


def test_temperature_is_annealed_linearly_with_a_floor():
    assert annealed_temperature(3.0, 0, 10) == pytest.approx(2.7)  # 3 * 9/10
    assert annealed_temperature(3.0, 5, 20) == pytest.approx(2.1)  # 3 * 14/20
    assert annealed_temperature(3.0, 9, 10) == 0.01  # steps_left 0 -> floor
    assert annealed_temperature(3.0, 9, 10, anneal=False) == 3.0


def test_max_span_score_is_one_minus_the_best_probability():
    probs = torch.tensor([[0.9, 0.5, 0.2, 0.1, 0.3, 0.2, 0.7]])  # last frame: no span
    scores = span_scores_max(probs, 3)
    assert torch.allclose(scores, torch.tensor([[0.1, 0.7]]), atol=1e-6)


def test_prod_span_score_is_minus_log_of_the_product():
    probs = torch.tensor([[0.9, 0.5, 0.2, 0.1, 0.3, 0.2]])
    scores = span_scores_prod(probs, 3)
    expected = torch.tensor([[-math.log(0.09), -math.log(0.006)]])
    assert torch.allclose(scores, expected, atol=1e-5)


def test_nonoverlap_choice_takes_the_highest_scores_and_never_a_frozen_span():
    scores = freeze(torch.tensor([[0.1, 0.7, 0.9, 0.4]]), torch.tensor([[True, True, False, True]]))
    assert scores[0, 2] == FROZEN_SCORE
    chosen = choose_spans_nonoverlap(scores, 2)
    assert chosen.tolist() == [[False, True, False, True]]
    assert spans_to_token_mask(chosen, 3).tolist() == [[False] * 3 + [True] * 3 + [False] * 3
                                                       + [True] * 3]


# token scores of 9 frames; span sums (start 0..6): 10, 7, 6, 0.5, 0.5, 2.5, 6.1
STRIDE1_SCORES = torch.tensor([[3.0, 1.0, 6.0, 0.0, 0.0, 0.5, 0.0, 2.0, 4.1]])


def frames(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask[0]).flatten().tolist()


def test_stride1_takes_the_least_probable_overlapping_spans():
    # target 4: u in [1, 2], first guess round(1.5) = 2 is a bound -> spans at 0 and 1
    assert frames(choose_spans_stride1(STRIDE1_SCORES, 4, 3)) == [0, 1, 2, 3]


def test_stride1_binary_search_keeps_the_last_union_tried():
    # target 6: u in [2, 4]; u = 3 (spans at 0, 1, 6) covers 7 > 6 -> high = 3, next guess
    # round(2.5) = 2 is a bound, so the search stops with the 7-frame union (audiocraft's result)
    assert frames(choose_spans_stride1(STRIDE1_SCORES, 6, 3)) == [0, 1, 2, 3, 6, 7, 8]


def test_stride1_masks_at_least_one_whole_span():
    assert frames(choose_spans_stride1(STRIDE1_SCORES, 1, 3)) == [0, 1, 2]


def test_stride1_rows_are_chosen_independently():
    scores = torch.cat([STRIDE1_SCORES, STRIDE1_SCORES.flip(-1)])
    mask = choose_spans_stride1(scores, 4, 3)
    assert frames(mask[:1]) == [0, 1, 2, 3]
    assert frames(mask[1:]) == [5, 6, 7, 8]


def test_magnet_params_defaults_are_audiocrafts():
    p = MagnetParams(duration=10.0)
    assert p.decoding_steps == (20, 10, 10, 10) and p.total_steps == 50
    assert (p.span_len, p.span_arrangement, p.scoring) == (3, "nonoverlap", "max")
    assert (p.max_cfg_coef, p.min_cfg_coef, p.temperature, p.top_p, p.top_k) == (10.0, 1.0, 3.0, 0.9, 0)
    assert MagnetParams(duration=1.0, span_arrangement="stride1").scoring == "prod"
    assert MagnetParams(duration=1.0, decoding_steps=[3, 2]).decoding_steps == (3, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"duration": 0.0}, "duration"),
    ({"decoding_steps": (20, 0, 10, 10)}, "decoding_steps"),
    ({"decoding_steps": ()}, "decoding_steps"),
    ({"decoding_steps": "20"}, "decoding_steps"),
    ({"span_arrangement": "overlap"}, "span_arrangement"),
    ({"span_arrangement": "stride1", "span_scoring": "max"}, "span_scoring"),
    ({"span_scoring": "mean"}, "span_scoring"),
    ({"span_len": 0}, "span_len"),
    ({"max_cfg_coef": float("nan")}, "max_cfg_coef"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"rescore_weight": 2.0}, "rescore_weight"),
    ({"seed": -3}, "seed"),
    ({"anneal_temperature": 1}, "anneal_temperature"),
])
def test_magnet_params_reject_bad_values_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MagnetParams(**{"duration": 10.0, **kwargs})
