"""The audiocraft-style API on the debug model; model resolution; the native checkpoint
format; the generate / continue CLI."""
import argparse
import math
from fractions import Fraction

import pytest
import soundfile as sf
import torch

from engine import MusicGen, load_model
from engine import generate_command
from engine.api import build_debug_model
from engine.conditioners.chroma import ChromaExtractor
from engine.conditioners.text import debug_text_encoder
from engine.loaders.native_format import (checkpoint_from_modules, load_native, read_native_meta,
                                          save_native)
from engine.models.encodec import EncodecModel, InterleavedStereoCodec, debug_codec_config
from engine.models.lm import LMConfig, LMModel


@pytest.fixture(scope="module")
def debug():
    return MusicGen.get_pretrained("debug")


def _tiny(lm_cfg: LMConfig, stereo: bool = False, max_duration: float = 30.0) -> MusicGen:
    torch.manual_seed(0)
    codec = EncodecModel(debug_codec_config()).eval()
    return MusicGen("tiny", InterleavedStereoCodec(codec) if stereo else codec,
                    LMModel(lm_cfg).eval(), debug_text_encoder(dim=32), max_duration=max_duration)


def test_debug_model_properties(debug):
    assert debug.sample_rate == 32000
    assert debug.frame_rate == 50
    assert debug.audio_channels == 1
    assert debug.max_duration == 30.0
    assert debug.supported_modes == ("ar",)
    assert debug.compression_model.num_codebooks == debug.lm.n_q == 4


def test_generate_returns_audio_and_tokens_of_the_duration(debug):
    debug.set_generation_params(duration=0.5, seed=1)
    wav, tokens = debug.generate(["lofi drums", "jazz piano"], return_tokens=True)
    assert tokens.shape == (2, 4, 25)
    assert wav.shape == (2, 1, 25 * 640)
    assert wav.dtype == torch.float32 and bool(torch.isfinite(wav).all())
    again = debug.generate(["lofi drums", "jazz piano"], return_tokens=True)[1]
    assert torch.equal(tokens, again), "same seed, same tokens"
    debug.set_generation_params(duration=0.5, seed=2)
    other = debug.generate(["lofi drums", "jazz piano"], return_tokens=True)[1]
    assert not torch.equal(tokens, other)


def test_generate_unconditional_shapes(debug):
    debug.set_generation_params(duration=0.3, seed=0)
    wav = debug.generate_unconditional(3)
    assert wav.shape == (3, 1, 15 * 640)


def test_continuation_keeps_the_prompt_frames(debug):
    debug.set_generation_params(duration=0.6, seed=3)
    prompt = torch.sin(torch.arange(13230) / 44100 * 2 * math.pi * 220)[None] * 0.5  # [1, N] 0.3 s
    wav, tokens = debug.generate_continuation(prompt, 44100, ["more"], return_tokens=True)
    from engine.models.musicgen import convert_audio
    prompt_codes = debug.compression_model.encode(convert_audio(prompt[None], 44100, 32000, 1))
    assert tokens.shape == (1, 4, 30)
    assert torch.equal(tokens[..., :prompt_codes.shape[-1]], prompt_codes)
    assert wav.shape == (1, 1, 30 * 640)


def test_progress_callback_counts_steps_and_can_cancel(debug):
    debug.set_generation_params(duration=0.2, seed=0)
    calls = []
    debug.generate(["x"], progress_callback=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 13) for i in range(1, 14)]  # 10 frames + 3 delay steps

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        debug.generate(["x"], progress_callback=stop)


def test_bad_generation_params_are_refused(debug):
    with pytest.raises(ValueError, match="mode"):
        debug.set_generation_params(mode="magnet")
    with pytest.raises(ValueError, match="top_p"):
        debug.set_generation_params(top_p=2.0)
    with pytest.raises(ValueError, match="extend_stride"):
        debug.set_generation_params(duration=60.0, extend_stride=30.0)
    with pytest.raises(ValueError, match="descriptions"):
        debug.generate("one string")


def test_long_form_past_max_duration_has_the_right_length():
    model = _tiny(LMConfig(n_q=4, card=64, dim=32, num_heads=2, num_layers=2, cond_dim=32),
                  max_duration=0.4)
    model.set_generation_params(duration=1.1, extend_stride=0.24, seed=0)
    calls = []
    wav, tokens = model.generate(["long"], return_tokens=True,
                                 progress_callback=lambda d, t: calls.append((d, t)))
    assert tokens.shape == (1, 4, 55)
    assert wav.shape == (1, 1, 55 * 640)
    assert calls[-1][0] == calls[-1][1] == len(calls)


def test_stereo_model_gives_two_channels():
    model = _tiny(LMConfig(n_q=8, card=64, dim=32, num_heads=2, num_layers=2, cond_dim=32),
                  stereo=True)
    assert model.pattern.delays == [0, 0, 1, 1, 2, 2, 3, 3]
    model.set_generation_params(duration=0.2, seed=0)
    wav, tokens = model.generate(["wide"], return_tokens=True)
    assert tokens.shape == (1, 8, 10) and wav.shape == (1, 2, 10 * 640)


def test_generate_with_chroma_on_a_melody_model(debug):
    model = _tiny(LMConfig(n_q=4, card=64, dim=32, num_heads=2, num_layers=2, cond_dim=0,
                           prefix_text_dim=32, chroma_bins=12))
    model.set_generation_params(duration=0.3, seed=0, use_sampling=False)
    t = torch.arange(22050) / 22050
    a440 = torch.sin(2 * math.pi * 440 * t)[None]
    c262 = torch.sin(2 * math.pi * 261.63 * t)[None]
    wav, tokens = model.generate_with_chroma(["tune"], a440, 22050, return_tokens=True)
    assert wav.shape == (1, 1, 15 * 640) and tokens.shape == (1, 4, 15)
    other = model.generate_with_chroma(["tune"], c262, 22050, return_tokens=True)[1]
    assert not torch.equal(tokens, other), "the melody must condition the output"
    with pytest.raises(ValueError, match="melody"):
        debug.generate_with_chroma(["tune"], a440, 22050)


@pytest.mark.parametrize("freq,bin_", [(440.0, 9), (261.63, 0), (392.0, 7), (311.13, 3)])
def test_chroma_of_a_pure_tone_is_its_pitch_class(freq, bin_):
    t = torch.arange(32000) / 32000
    chroma = ChromaExtractor(32000)(torch.sin(2 * math.pi * freq * t)[None])
    assert chroma.shape == (1, 32000 // 4096 + 1, 12)
    assert bool((chroma.sum(-1) == 1).all())
    assert bool((chroma.argmax(-1) == bin_).all())


def test_native_format_round_trip(tmp_path, debug):
    ckpt = checkpoint_from_modules("musicgen", debug.compression_model, debug.lm,
                                   debug.text_encoder_spec, debug.max_duration,
                                   generation={"top_k": 50})
    save_native(tmp_path / "m", ckpt)
    meta = read_native_meta(tmp_path / "m")
    assert meta["format"] == "barforge" and meta["version"] == 1 and meta["family"] == "musicgen"
    assert set(meta["files"]) == {"codec.safetensors", "lm.safetensors"}
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, MusicGen) and loaded.generation_params.top_k == 50
    debug.set_generation_params(duration=0.3, seed=5, top_k=50)
    loaded.set_generation_params(duration=0.3, seed=5)                # keeps the packaged top_k
    assert loaded.generation_params.top_k == 50
    assert torch.equal(debug.generate(["same"], return_tokens=True)[1],
                       loaded.generate(["same"], return_tokens=True)[1])


def test_a_magnet_checkpoint_keeps_its_decoding_facts_and_sampling_defaults(tmp_path):
    from engine.api import debug_magnet
    from engine.models.magnet import MAGNeT

    src = debug_magnet()
    text = {"kind": "debug", "seed": 0, "dim": src.lm.cfg.cond_dim}
    ckpt = checkpoint_from_modules("magnet", src.compression_model, src.lm, text,
                                   src.max_duration, generation={"decoding_steps": [4, 2, 2, 2]},
                                   ar_lm=src.ar_lm, magnet={"span_len": 2, "subcodes_context": -1},
                                   ar_max_duration=4.0)
    save_native(tmp_path / "m", ckpt)
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, MAGNeT)
    assert (loaded.span_len, loaded.attn_band, loaded.ar_max_duration) == (2, None, 4.0)
    assert loaded.magnet_params.decoding_steps == (4, 2, 2, 2)
    loaded.set_generation_params(mode="hybrid", duration=2.0)      # packaged steps stay
    assert loaded.magnet_params.decoding_steps == (4, 2, 2, 2) and loaded.magnet_params.span_len == 2
    loaded.set_generation_params(decoding_steps=(1, 1, 1, 1))     # a given keyword wins
    assert loaded.magnet_params.decoding_steps == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="unknown generation parameter.*steps"):
        loaded.set_generation_params(steps=(1, 1, 1, 1))


def test_native_format_refuses_a_modified_or_missing_file(tmp_path, debug):
    ckpt = checkpoint_from_modules("musicgen", debug.compression_model, debug.lm,
                                   debug.text_encoder_spec, debug.max_duration)
    save_native(tmp_path, ckpt)
    weights = tmp_path / "lm.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_native(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="lm.safetensors"):
        load_native(tmp_path)


def test_unknown_model_names_list_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="'debug', 'debug-magnet', 'default'"):
        load_model("no-such-model")
    with pytest.raises(ValueError, match="barforge.json"):
        load_model(tmp_path)


def test_debug_model_is_the_same_on_every_load(debug):
    other = build_debug_model()
    assert all(torch.equal(a, b) for a, b in zip(debug.lm.state_dict().values(),
                                                 other.lm.state_dict().values()))


def _cli(argv):
    parser = argparse.ArgumentParser(prog="barforge")
    sub = parser.add_subparsers(dest="command", required=True)
    generate_command.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("rate", [32000, 44100])
def test_cli_generate_bars_writes_exactly_the_bar_length(tmp_path, rate):
    out = tmp_path / "clip.wav"
    assert _cli(["generate", "lofi drums", "--model", "debug", "--bars", "2", "--bpm", "93.7",
                 "--seed", "1", "--sample-rate", str(rate), "-o", str(out)]) == 0
    info = sf.info(str(out))
    expected = Fraction(2 * 4 * 60 * rate) / Fraction(93700, 1000)
    assert info.frames == round(expected) and info.samplerate == rate and info.channels == 1


def test_cli_rejects_absurd_bars_and_continue_extends_a_file(tmp_path):
    with pytest.raises(ValueError, match="--bpm"):
        _cli(["generate", "x", "--model", "debug", "--bars", "2", "--bpm", "1000", "-o",
              str(tmp_path / "a.wav")])
    for key, match in (("C", "--key must be a tonic and a mode"), ("H minor", "tonic"),
                       ("C lydian", "mode")):
        with pytest.raises(ValueError, match=match):
            _cli(["generate", "x", "--model", "debug", "--duration", "0.2", "--key", key, "-o",
                  str(tmp_path / "a.wav")])
    assert not (tmp_path / "a.wav").exists()
    src = tmp_path / "in.wav"
    sf.write(str(src), (torch.randn(22050, 2) * 0.1).numpy(), 44100)
    out = tmp_path / "out.wav"
    assert _cli(["continue", str(src), "keep going", "--model", "debug", "--duration", "0.3",
                 "--seed", "0", "-o", str(out)]) == 0
    info = sf.info(str(out))
    assert info.samplerate == 44100 and info.frames == round((0.5 + 0.3) * 44100)


def test_default_model_without_shipped_weights_is_an_error(tmp_path, monkeypatch):
    import engine.pretrained
    monkeypatch.setattr(engine.pretrained, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    with pytest.raises(FileNotFoundError, match="default model is missing"):
        load_model("default")
