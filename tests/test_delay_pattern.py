"""MusicGen's delay pattern: layout, round trip, masks."""
import pytest
import torch

from engine.decoding.delay_pattern import DelayPattern

SPECIAL = 2048


@pytest.mark.parametrize("K,T", [(1, 1), (2, 5), (4, 1), (4, 7), (8, 13), (4, 0)])
def test_build_then_revert_gives_the_codes_back(K, T):
    codes = torch.randint(0, SPECIAL, (3, K, T))
    pattern = DelayPattern.for_codebooks(K)
    seq = pattern.build(codes, SPECIAL)
    assert seq.shape == (3, K, T + K)
    back, valid = pattern.revert(seq, SPECIAL)
    assert torch.equal(back[..., :T], codes)
    assert bool(valid[:, :T].all())
    # frames past T: codebook k is held up to frame T + K - 2 - k (positions, not content)
    for k in range(K):
        assert valid[k].sum() == T + K - 1 - k


def test_layout_matches_audiocraft_delays():
    K, T = 4, 6
    codes = torch.arange(K * T).reshape(1, K, T) + 100
    seq = DelayPattern.for_codebooks(K).build(codes, SPECIAL)[0]
    assert bool((seq[:, 0] == SPECIAL).all()), "step 0 is all special"
    for k in range(K):
        for s in range(T + K):
            t = s - 1 - k
            want = codes[0, k, t] if 0 <= t < T else SPECIAL
            assert seq[k, s] == want, (k, s)


def test_valid_mask_marks_exactly_the_held_positions():
    K, T = 4, 5
    pattern = DelayPattern.for_codebooks(K)
    seq = pattern.build(torch.zeros(1, K, T, dtype=torch.long), SPECIAL)[0]
    assert torch.equal(pattern.valid_mask(T), seq != SPECIAL)
    assert pattern.valid_mask(T) is pattern.valid_mask(T)  # cached by length


def test_revert_of_partial_sequence_marks_incomplete_frames_invalid():
    K, T = 4, 6
    pattern = DelayPattern.for_codebooks(K)
    seq = pattern.build(torch.randint(0, 10, (1, K, T)), SPECIAL)[..., :5]  # steps 0..4
    codes, valid = pattern.revert(seq, SPECIAL)
    assert codes.shape == (1, K, 4)
    # frame t of codebook k sits at step t + 1 + k, held iff t + 1 + k <= 4
    expected = torch.tensor([[t + 1 + k <= 4 for t in range(4)] for k in range(K)])
    assert torch.equal(valid, expected)
    assert bool((codes[0][~valid] == SPECIAL).all())


def test_wrong_codebook_count_is_refused():
    with pytest.raises(ValueError, match="codebooks"):
        DelayPattern.for_codebooks(4).build(torch.zeros(1, 3, 2, dtype=torch.long), SPECIAL)


def test_stereo_pattern_delays_left_and_right_alike():
    pattern = DelayPattern.for_codebooks(8, stereo=True)
    assert pattern.delays == [0, 0, 1, 1, 2, 2, 3, 3]
    codes = torch.randint(0, SPECIAL, (2, 8, 5))
    seq = pattern.build(codes, SPECIAL)
    assert seq.shape == (2, 8, 5 + 4)
    assert torch.equal(seq[:, 1, 1:6], codes[:, 1])  # R0 is not delayed
    assert torch.equal(seq[:, 7, 4:9], codes[:, 7])  # R3 is delayed by 3
    back, valid = pattern.revert(seq, SPECIAL)
    assert torch.equal(back[..., :5], codes) and bool(valid[:, :5].all())


def test_bad_delays_are_refused():
    with pytest.raises(ValueError, match="delays"):
        DelayPattern([1, 2])
    with pytest.raises(ValueError, match="even"):
        DelayPattern.for_codebooks(3, stereo=True)
