"""Parity with transformers' EncodecModel (random weights built here) and checkpoint errors."""
import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import EncodecConfig
from transformers import EncodecModel as HFEncodecModel

from engine.loaders.codec_checkpoint import (ENV_ENCODEC_32KHZ, codec_from_hf_state,
                                             load_codec)
from engine.models.encodec import EncodecModel, InterleavedStereoCodec

BINS, DIM, N_Q = 64, 16, 4


def _hf_config(pad_mode: str) -> EncodecConfig:
    # 6 bits x 50 frames/s x 4 codebooks = 1.2 kbps
    return EncodecConfig(sampling_rate=32000, audio_channels=1, num_filters=4, hidden_size=DIM,
                         upsampling_ratios=[8, 5, 4, 4], num_lstm_layers=2, codebook_size=BINS,
                         use_conv_shortcut=False, norm_type="weight_norm", pad_mode=pad_mode,
                         use_causal_conv=False, normalize=False, target_bandwidths=[1.2])


def _build_hf(pad_mode: str, seed: int = 0) -> HFEncodecModel:
    torch.manual_seed(seed)
    hf = HFEncodecModel(_hf_config(pad_mode)).eval()
    assert hf.quantizer.num_quantizers == N_Q
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # HF initialises codebooks to zeros: fill each with residuals of real latents
        latent = hf.encoder(torch.randn(4, 1, 32000, generator=g) * 0.3)    # [4, D, 50]
        residual = latent.permute(0, 2, 1).reshape(-1, DIM)                   # [200, D]
        for layer in hf.quantizer.layers:
            rows = residual[torch.randperm(residual.shape[0], generator=g)[:BINS]]
            layer.codebook.embed.copy_(rows + 0.01 * torch.randn(rows.shape, generator=g))
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.uniform_(0, 5, generator=g)
            residual = residual - layer.codebook.decode(layer.codebook.encode(residual))
    return hf


@pytest.fixture(scope="module", params=["reflect", "constant"])
def hf_dir(request, tmp_path_factory):
    hf = _build_hf(request.param)
    path = tmp_path_factory.mktemp(f"hf_{request.param}")
    hf.save_pretrained(path)
    return hf, path


def _wav(n: int = 7001, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    t = torch.arange(n) / 32000
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t)
    return tone + 0.1 * torch.randn(batch, 1, n, generator=g)


def test_hf_directory_gives_identical_codes_and_matching_audio(hf_dir):
    hf, path = hf_dir
    ours = load_codec(path)
    assert isinstance(ours, EncodecModel)
    assert ours.config.pad_mode == hf.config.pad_mode
    wav = _wav()
    with torch.no_grad():
        hf_codes = hf.encode(wav).audio_codes                   # [chunks=1, B, K, T]
        codes = ours.encode(wav)
        assert hf_codes.shape == (1, 2, N_Q, 11)
        assert torch.equal(codes, hf_codes[0])
        assert len(codes.unique()) > 16                         # the codebooks are really used
        hf_audio = hf.decode(hf_codes, [None]).audio_values
        audio = ours.decode(codes)
    assert audio.shape == hf_audio.shape == (2, 1, 11 * 640)
    assert float((audio - hf_audio).abs().max()) < 1e-4
    assert float(hf_audio.abs().max()) > 1e-3                   # not trivially zero


def test_codebook_buffers_load_unchanged(hf_dir):
    hf, path = hf_dir
    ours = load_codec(path)
    for k in range(N_Q):
        theirs, mine = hf.quantizer.layers[k].codebook, ours.quantizer.layers[k]._codebook
        for name in ("embed", "embed_avg", "cluster_size", "inited"):
            assert torch.equal(getattr(theirs, name), getattr(mine, name)), (k, name)


def _hf_to_audiocraft(name: str, transposed: set[int]) -> str:
    """transformers' names -> audiocraft's (the inverse of transformers' conversion script)."""
    name = name.replace("parametrizations.weight.original0", "weight_g")
    name = name.replace("parametrizations.weight.original1", "weight_v")
    m = re.match(r"(encoder|decoder)\.layers\.(\d+)\.(.*)", name)
    if m:
        part, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        if not rest.startswith("lstm."):
            inner = "convtr.convtr." if part == "decoder" and idx in transposed else "conv.conv."
            rest = re.sub(r"(^|\.)conv\.", lambda mm: mm.group(1) + inner, rest, count=1)
        return f"{part}.model.{idx}.{rest}"
    return re.sub(r"^quantizer\.layers\.(\d+)\.codebook\.", r"quantizer.vq.layers.\1._codebook.",
                  name)


def _audiocraft_cfg(pad_mode: str) -> str:
    cfg = {
        "sample_rate": 32000, "channels": 1, "compression_model": "encodec",
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq",
                    "sample_rate": "${sample_rate}", "channels": "${channels}",
                    "causal": False, "renormalize": False},
        "seanet": {"dimension": DIM, "channels": "${channels}", "causal": "${encodec.causal}",
                   "n_filters": 4, "n_residual_layers": 1, "ratios": [8, 5, 4, 4],
                   "activation": "ELU", "activation_params": {"alpha": 1.0},
                   "norm": "weight_norm", "norm_params": {}, "kernel_size": 7,
                   "residual_kernel_size": 3, "last_kernel_size": 7, "dilation_base": 2,
                   "pad_mode": pad_mode, "true_skip": True, "compress": 2, "lstm": 2,
                   "disable_norm_outer_blocks": 0,
                   "decoder": {"trim_right_ratio": 1.0, "final_activation": None,
                               "final_activation_params": None},
                   "encoder": {}},
        "rvq": {"n_q": N_Q, "q_dropout": False, "bins": BINS, "decay": 0.99,
                "kmeans_init": True, "kmeans_iters": 50, "threshold_ema_dead_code": 2,
                "orthogonal_reg_weight": 0.0, "orthogonal_reg_active_codes_only": False},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def _write_audiocraft(hf: HFEncodecModel, path, pad_mode: str) -> None:
    transposed = {i for i, m in enumerate(hf.decoder.layers)
                  if type(m).__name__ == "EncodecConvTranspose1d"}
    best_state = {_hf_to_audiocraft(k, transposed): v.clone()
                  for k, v in hf.state_dict().items()}
    assert "decoder.model.3.convtr.convtr.weight_g" in best_state
    assert "encoder.model.13.lstm.weight_ih_l0" in best_state
    torch.save({"best_state": best_state, "xp.cfg": _audiocraft_cfg(pad_mode),
                "version": "1.4.0a2", "exported": True}, path)


def test_audiocraft_compression_state_dict_gives_identical_codes(hf_dir, tmp_path):
    hf, _ = hf_dir
    file = tmp_path / "compression_state_dict.bin"
    _write_audiocraft(hf, file, hf.config.pad_mode)
    for source in (file, tmp_path):                             # the file or its directory
        ours = load_codec(source)
        wav = _wav(5000, batch=1)
        with torch.no_grad():
            assert torch.equal(ours.encode(wav), hf.encode(wav).audio_codes[0])
            assert float((ours.decode(ours.encode(wav))
                          - hf.decode(hf.encode(wav).audio_codes, [None]).audio_values
                          ).abs().max()) < 1e-4


def test_audiocraft_pretrained_pointer_resolves_to_a_local_hf_dir(hf_dir, tmp_path,
                                                                 monkeypatch):
    hf, path = hf_dir
    file = tmp_path / "compression_state_dict.bin"
    torch.save({"pretrained": "facebook/encodec_32khz"}, file)
    monkeypatch.delenv(ENV_ENCODEC_32KHZ, raising=False)
    with pytest.raises(FileNotFoundError, match=ENV_ENCODEC_32KHZ) as err:
        load_codec(file)
    assert "huggingface.co/facebook/encodec_32khz" in str(err.value)
    wav = _wav(3000, batch=1)
    expected = hf.encode(wav).audio_codes[0]
    with torch.no_grad():
        assert torch.equal(load_codec(file, pretrained_dir=path).encode(wav), expected)
        monkeypatch.setenv(ENV_ENCODEC_32KHZ, str(path))
        assert torch.equal(load_codec(file).encode(wav), expected)


def test_codec_from_musicgen_state_and_composite_dir(hf_dir, tmp_path):
    hf, path = hf_dir
    hf_cfg = json.loads((path / "config.json").read_text())
    state = load_file(str(path / "model.safetensors"))
    wav = _wav(3000, batch=1)
    expected = hf.encode(wav).audio_codes[0]
    with torch.no_grad():
        assert torch.equal(codec_from_hf_state(hf_cfg, state).encode(wav), expected)
    # a MusicGen composite layout: audio_encoder.* tensors beside other (LM) tensors
    composite = {f"audio_encoder.{k}": v for k, v in state.items()}
    composite["decoder.model.decoder.layer_norm.weight"] = torch.ones(8)
    save_file(composite, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "musicgen", "audio_encoder": hf_cfg,
         "decoder": {"model_type": "musicgen_decoder", "audio_channels": 2}}))
    stereo = load_codec(tmp_path)
    assert isinstance(stereo, InterleavedStereoCodec) and stereo.num_codebooks == 2 * N_Q
    with torch.no_grad():
        codes = stereo.encode(wav.repeat(1, 2, 1))
    assert torch.equal(codes[:, 0::2], expected) and torch.equal(codes[:, 1::2], expected)


def test_missing_checkpoint_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_codec(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_codec(tmp_path)                                    # empty directory


def _copy_dir(src, dst):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    return dst


def test_truncated_safetensors_raises_value_error_naming_the_file(hf_dir, tmp_path):
    _, path = hf_dir
    bad = _copy_dir(path, tmp_path / "bad")
    data = (path / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"bad/model\.safetensors"):
        load_codec(bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="safetensors"):
        load_codec(bad)


def test_wrong_shape_raises_value_error_naming_tensor_and_shapes(hf_dir, tmp_path):
    _, path = hf_dir
    state = load_file(str(path / "model.safetensors"))
    name = "quantizer.layers.2.codebook.embed"
    state[name] = torch.zeros(BINS, DIM + 1)
    bad = _copy_dir(path, tmp_path / "shape")
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match=re.escape(f"{name}' has shape (64, 17), "
                                                   "expected (64, 16)")) as err:
        load_codec(bad)
    assert "shape/model.safetensors" in str(err.value)


def test_unknown_and_missing_tensors_raise_value_errors(hf_dir, tmp_path):
    _, path = hf_dir
    state = load_file(str(path / "model.safetensors"))
    extra = _copy_dir(path, tmp_path / "extra")
    save_file({**state, "encoder.layers.99.conv.bias": torch.zeros(1)},
              str(extra / "model.safetensors"))
    with pytest.raises(ValueError, match="unexpected tensor 'encoder.layers.99.conv.bias'"):
        load_codec(extra)
    short = _copy_dir(path, tmp_path / "short")
    save_file({k: v for k, v in state.items() if "layers.3.codebook" not in k},
              str(short / "model.safetensors"))
    with pytest.raises(ValueError, match="missing tensor 'quantizer.layers.3._codebook"):
        load_codec(short)


def test_unsupported_hf_config_is_rejected(hf_dir, tmp_path):
    _, path = hf_dir
    bad = _copy_dir(path, tmp_path / "norm")
    cfg = json.loads((path / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "normalize": True}))
    (bad / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="normalize"):
        load_codec(bad)
