"""The codec on its own: RVQ round trips, shapes and lengths, EMA training state, stereo."""
import math

import pytest
import torch

from engine.models.encodec import (CodecConfig, EncodecModel, InterleavedStereoCodec,
                                   debug_codec_config, encodec_32khz_config)
from engine.modules.conv import extra_padding_for_conv1d, pad1d, pad_for_strided_conv1d
from engine.modules.quantization import ResidualVectorQuantizer


@pytest.fixture(scope="module")
def codec() -> EncodecModel:
    torch.manual_seed(0)
    return EncodecModel(debug_codec_config()).eval()


def _separated_quantizer(n_q=4, bins=32, dim=8) -> ResidualVectorQuantizer:
    """Codebook k scaled by 100**-k: later stages are far below half the spacing of earlier
    ones, so every sum of codewords has a unique nearest decomposition."""
    torch.manual_seed(1)
    q = ResidualVectorQuantizer(dimension=dim, n_q=n_q, bins=bins, kmeans_init=False)
    with torch.no_grad():
        for k, layer in enumerate(q.layers):
            layer._codebook.embed.copy_(torch.randn(bins, dim) * 100.0 ** -k)
    return q


def test_rvq_encode_of_decoded_codes_gives_the_codes_back():
    q = _separated_quantizer()
    codes = torch.randint(0, 32, (3, 4, 11))
    latent = q.decode(codes)
    assert latent.shape == (3, 8, 11)
    assert torch.equal(q.encode(latent), codes)


def test_rvq_decode_is_the_sum_of_the_chosen_codewords():
    q = _separated_quantizer()
    codes = torch.randint(0, 32, (2, 4, 5))
    expected = sum(q.layers[k]._codebook.embed[codes[:, k]] for k in range(4))   # [B, T, D]
    assert torch.allclose(q.decode(codes), expected.permute(0, 2, 1))
    # fewer codebooks decode to the partial sum
    partial = sum(q.layers[k]._codebook.embed[codes[:, k]] for k in range(2))
    assert torch.allclose(q.decode(codes[:, :2]), partial.permute(0, 2, 1))


def test_rvq_encode_with_fewer_codebooks_is_a_prefix():
    q = _separated_quantizer()
    x = torch.randn(2, 8, 7)
    assert torch.equal(q.encode(x, n_q=2), q.encode(x)[:, :2])
    with pytest.raises(ValueError, match="n_q"):
        q.encode(x, n_q=5)


@pytest.mark.parametrize("n", [1, 639, 640, 641, 3200, 5001])
def test_encode_gives_ceil_n_over_hop_frames_and_decode_whole_frames(codec, n):
    wav = torch.randn(2, 1, n) * 0.1
    with torch.no_grad():
        codes = codec.encode(wav)
        frames = math.ceil(n / 640)
        assert codes.shape == (2, 4, frames) and codes.dtype == torch.int64
        assert 0 <= int(codes.min()) and int(codes.max()) < codec.cardinality
        assert codec.decode(codes).shape == (2, 1, frames * 640)
        assert codec(wav).audio.shape == (2, 1, n)


def test_debug_and_32khz_configs_run_at_50_frames_per_second(codec):
    assert codec.sample_rate == 32000 and codec.frame_rate == 50.0 and codec.hop_length == 640
    assert codec.num_codebooks == 4 and codec.cardinality == 64 and codec.channels == 1
    full = encodec_32khz_config()
    assert (full.frame_rate, full.n_q, full.bins, full.dimension, full.n_filters) == \
        (50.0, 4, 2048, 128, 64)


def test_encoding_is_independent_of_the_batch(codec):
    wav = torch.randn(3, 1, 2000) * 0.1
    with torch.no_grad():
        together = codec.encode(wav)
        alone = torch.cat([codec.encode(wav[i:i + 1]) for i in range(3)])
    assert torch.equal(together, alone)


def test_config_round_trips_through_a_dict_and_rejects_bad_fields():
    cfg = debug_codec_config()
    d = cfg.to_dict()
    assert d["ratios"] == [8, 5, 4, 4]
    assert CodecConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown CodecConfig fields"):
        CodecConfig.from_dict({**d, "hop": 640})
    with pytest.raises(ValueError, match="pad_mode"):
        CodecConfig(pad_mode="circular")


def test_bad_inputs_get_clear_errors(codec):
    with pytest.raises(ValueError, match=r"\[B, 1, N\]"):
        codec.encode(torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        codec.decode(torch.full((1, 4, 3), 64))
    with pytest.raises(ValueError, match="K <= 4"):
        codec.decode(torch.zeros(1, 5, 3, dtype=torch.long))


def test_training_forward_has_straight_through_gradient_and_leaves_codebooks_alone():
    torch.manual_seed(2)
    model = EncodecModel(debug_codec_config()).train()
    before = {k: v.clone() for k, v in model.quantizer.state_dict().items()}
    out = model(torch.randn(2, 1, 1280) * 0.1)
    assert out.latent.shape == (2, 16, 2) and out.codes.shape == (2, 4, 2)
    assert out.commit_loss.dim() == 0 and float(out.commit_loss.detach()) > 0
    (out.audio.pow(2).mean() + out.commit_loss).backward()
    first_conv = model.encoder.model[0].conv.parametrizations.weight.original1
    assert first_conv.grad is not None and float(first_conv.grad.abs().sum()) > 0
    for k, v in model.quantizer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_ema_update_moves_the_codebook_toward_the_data():
    torch.manual_seed(3)
    q = ResidualVectorQuantizer(dimension=4, n_q=1, bins=8, kmeans_init=False, decay=0.5,
                                threshold_ema_dead_code=0.0)
    centers = torch.randn(8, 4) * 3
    data = (centers[torch.randint(0, 8, (400,))] + 0.05 * torch.randn(400, 4))  # [M, D]
    x = data.t().reshape(1, 4, 400)                                            # [B, D, T]

    def error() -> float:
        return float((q.decode(q.encode(x)) - x).pow(2).mean())

    start = error()
    for _ in range(10):
        q.ema_update(x, q.encode(x))
    assert error() < 0.5 * start


def test_ema_update_initialises_codebooks_by_kmeans_and_restarts_dead_codes():
    torch.manual_seed(4)
    q = ResidualVectorQuantizer(dimension=4, n_q=2, bins=16, kmeans_init=True,
                                kmeans_iters=5, threshold_ema_dead_code=2.0)
    assert all(float(layer._codebook.inited) == 0 for layer in q.layers)
    x = torch.randn(2, 4, 100)
    q.ema_update(x, q.encode(x), generator=torch.Generator().manual_seed(0))
    book = q.layers[0]._codebook
    assert float(book.inited) == 1 and float(q.layers[1]._codebook.inited) == 1
    assert float(book.embed.abs().sum()) > 0
    # starve code 0 of data: it dies and is restarted from a batch vector
    far = torch.full((1, 4, 50), 100.0) + torch.randn(1, 4, 50)
    with torch.no_grad():
        book.cluster_size[0] = 0.0
    q.ema_update(far, q.encode(far), generator=torch.Generator().manual_seed(0))
    rows = far[0].t()                                                    # [M, D]
    assert torch.isclose(rows, book.embed[0]).all(dim=1).any()


def test_stereo_wrapper_interleaves_left_right_codebooks(codec):
    stereo = InterleavedStereoCodec(codec)
    assert (stereo.channels, stereo.num_codebooks, stereo.cardinality) == (2, 8, 64)
    wav = torch.randn(2, 2, 1900) * 0.1
    with torch.no_grad():
        codes = stereo.encode(wav)
        left, right = codec.encode(wav[:, :1]), codec.encode(wav[:, 1:])
        assert codes.shape == (2, 8, 3)
        assert torch.equal(codes[:, 0], left[:, 0]) and torch.equal(codes[:, 1], right[:, 0])
        assert torch.equal(codes[:, 2], left[:, 1]) and torch.equal(codes[:, 7], right[:, 3])
        split_left, split_right = stereo.split(codes)
        assert torch.equal(split_left, left) and torch.equal(split_right, right)
        assert torch.equal(stereo.interleave(left, right), codes)
        audio = stereo.decode(codes)
        assert audio.shape == (2, 2, 1920)
        assert torch.equal(audio[:, :1], codec.decode(left))
        assert torch.equal(audio[:, 1:], codec.decode(right))
    with pytest.raises(ValueError, match="mono"):
        InterleavedStereoCodec(EncodecModel(CodecConfig(channels=2, n_filters=2, dimension=4,
                                                        bins=8, lstm_layers=0)))


@pytest.mark.parametrize("mode", ["reflect", "constant"])
@pytest.mark.parametrize("stride", [4, 5, 8])
def test_strided_padding_equals_audiocraft_rule_for_every_length(mode, stride):
    kernel = 2 * stride
    total = kernel - stride
    right = total // 2
    left = total - right
    for n in range(1, 4 * kernel):
        x = torch.randn(1, 2, n)
        extra = extra_padding_for_conv1d(n, kernel, stride, total)
        assert (n + extra) % stride == 0 and 0 <= extra < stride
        expected = pad1d(x, (left, right + extra), mode)
        assert torch.equal(pad_for_strided_conv1d(x, left, right, kernel, stride, mode),
                           expected), n
