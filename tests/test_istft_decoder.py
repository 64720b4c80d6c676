"""The Vocos-style iSTFT codec decoder: its inverse STFT is torch.istft's, it decodes whole
frames, it round-trips through configs and checkpoints, and its ONNX graph matches PyTorch."""
import dataclasses

import pytest
import torch

from engine.models.encodec import CodecConfig, EncodecModel, debug_codec_config
from engine.modules.istft_decoder import InverseSTFT, ISTFTDecoder


@pytest.mark.parametrize("hop", [160, 320])
def test_inverse_stft_is_torch_istft(hop):
    torch.manual_seed(0)
    n_fft, frames = 4 * hop, 37
    wav = torch.randn(2, frames * hop)
    window = torch.hann_window(n_fft)
    spec = torch.stft(wav, n_fft, hop, window=window, center=True, return_complex=True)[..., :frames]
    noise = torch.randn(2, n_fft // 2 + 1, frames, dtype=torch.complex64)   # not a consistent STFT
    ours = InverseSTFT(hop)
    for s in (spec, noise):
        ref = torch.istft(s, n_fft, hop, window=window, center=True, length=frames * hop)
        assert torch.allclose(ours(s.real, s.imag), ref, atol=1e-5)
    assert torch.allclose(ours(spec.real, spec.imag), wav, atol=1e-5)        # perfect reconstruction


def _istft_config(**kw) -> CodecConfig:
    return dataclasses.replace(debug_codec_config(), decoder="istft", istft_dim=16, istft_low_layers=1,
                               istft_high_layers=1, **kw)


def test_codec_with_istft_decoder_decodes_whole_frames_and_round_trips_its_config():
    config = _istft_config()
    assert CodecConfig.from_dict(config.to_dict()) == config
    codec = EncodecModel(config).eval()
    assert isinstance(codec.decoder, ISTFTDecoder)
    for frames in (1, 2, 7):
        wav = torch.randn(2, 1, frames * codec.hop_length)
        codes = codec.encode(wav)
        assert codec.decode(codes).shape == (2, 1, frames * codec.hop_length)
    twin = EncodecModel(config)
    twin.load_state_dict(codec.state_dict())                   # no STFT basis in the checkpoint
    assert not any("basis" in k for k in codec.state_dict())


def test_bad_istft_configs_are_refused():
    with pytest.raises(ValueError, match="decoder"):
        dataclasses.replace(debug_codec_config(), decoder="hifigan")
    with pytest.raises(ValueError, match="mono"):
        _istft_config(channels=2)
    with pytest.raises(ValueError, match="istft_upsample"):
        ISTFTDecoder(8, 640, upsample=3)


def test_istft_codec_decoder_exports_to_onnx_and_matches_pytorch(tmp_path):
    from engine.loaders.onnx_bundle import open_bundle
    from engine.models.musicgen import MusicGen
    from engine.api import build_debug_model
    from export.bundle import export_bundle
    debug = build_debug_model()
    torch.manual_seed(0)
    codec = EncodecModel(_istft_config()).eval()
    model = MusicGen("debug-istft", codec, debug.lm, debug.text_encoder, max_duration=30.0)
    model.text_encoder_spec = debug.text_encoder_spec
    export_bundle(model, tmp_path / "b", log=lambda s: None)
    onnx_codec = open_bundle(tmp_path / "b", provider="cpu").codec
    for batch, frames in ((1, 1), (2, 9), (1, 40)):
        codes = torch.randint(0, codec.cardinality, (batch, codec.num_codebooks, frames))
        with torch.no_grad():
            ref = codec.decode(codes)
        out = onnx_codec.decode(codes)
        assert out.shape == ref.shape == (batch, 1, frames * codec.hop_length)
        assert float((out - ref).abs().max()) < 1e-4 * max(1.0, float(ref.abs().max()))
