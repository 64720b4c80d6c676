"""ONNX bundles of the debug models: export, reload, and decode the same codes as PyTorch."""
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.api import build_debug_model, load_model
from engine.loaders.onnx_bundle import open_bundle
from engine.loaders.onnx_manifest import read_manifest
from export.bundle import export_bundle, op_types

TEXTS = ["lofi drums", "bright synth arpeggio"]


@pytest.fixture(scope="module")
def musicgen():
    return build_debug_model()


@pytest.fixture(scope="module")
def bundle(musicgen, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "musicgen"
    export_bundle(musicgen, out, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def magnet_pair(tmp_path_factory):
    from engine.api import debug_magnet
    model = debug_magnet()
    out = tmp_path_factory.mktemp("m") / "magnet"
    export_bundle(model, out, log=lambda s: None)
    return model, load_model(out, provider="cpu")


def _greedy(model, duration=1.0):
    model.set_generation_params(duration=duration, use_sampling=False, cfg_coef=3.0)
    return model.generate(TEXTS, return_tokens=True)


def test_greedy_ar_codes_match_pytorch_and_audio_within_tolerance(musicgen, bundle):
    onnx_model = load_model(bundle, provider="cpu")
    wav_t, codes_t = _greedy(musicgen)
    wav_o, codes_o = _greedy(onnx_model)
    assert torch.equal(codes_t, codes_o)
    assert wav_o.shape == wav_t.shape
    assert float((wav_o - wav_t).abs().max()) < 1e-4


def test_continuation_runs_through_the_codec_encoder_graph(musicgen, bundle):
    onnx_model = load_model(bundle, provider="cpu")
    prompt = torch.randn(1, 1, 32000 // 2)
    for m in (musicgen, onnx_model):
        m.set_generation_params(duration=1.0, use_sampling=False)
    codes_t = musicgen.generate_continuation(prompt, 32000, ["go on"], return_tokens=True)[1]
    codes_o = onnx_model.generate_continuation(prompt, 32000, ["go on"], return_tokens=True)[1]
    assert torch.equal(codes_t, codes_o)


@pytest.mark.parametrize("mode", ["magnet", "hybrid"])
def test_greedy_magnet_and_hybrid_codes_match_pytorch(magnet_pair, mode):
    torch_model, onnx_model = magnet_pair
    out = []
    for m in (torch_model, onnx_model):
        m.set_generation_params(duration=2.0, mode=mode, use_sampling=False,
                                decoding_steps=(3, 2, 2, 2), seed=0)
        out.append(m.generate(TEXTS, return_tokens=True))
    assert torch.equal(out[0][1], out[1][1])
    assert float((out[0][0] - out[1][0]).abs().max()) < 1e-4


@pytest.mark.parametrize("frames", [60, 200])   # torch: band as a mask / computed in blocks
@pytest.mark.parametrize("band", [0, 5, None])
def test_lm_full_band_limited_logits_equal_torch(magnet_pair, frames, band):
    """The exported lm_full's gathered-window attention equals the torch runtime's band-limited
    pass (at 200 frames torch computes only inside the band too; at 60 it masks)."""
    torch_model, onnx_model = magnet_pair
    cond = torch_model._condition_rows(torch_model._text(TEXTS), None, cfg=True)
    tokens = torch.randint(0, torch_model.lm.card + 1, (4, torch_model.lm.n_q, frames),
                           generator=torch.Generator().manual_seed(frames))
    for codebook in (0, 3):
        with torch.inference_mode():
            ref = torch_model.backend.full(tokens, torch_model.backend.prepare(cond), band,
                                           codebook=codebook)
        got = onnx_model.backend.full(tokens, onnx_model.backend.prepare(cond), band,
                                      codebook=codebook)
        assert got.shape == ref.shape == (4, frames, torch_model.lm.card)
        assert float((got - ref).abs().max()) < 1e-4


def test_lm_full_attention_cost_grows_with_the_band_not_the_length(magnet_pair, tmp_path):
    """No T x T score matrix in a stage >= 1 pass: the attention bias onnxruntime is fed has
    the gathered windows' width (block + 2 band), not the length."""
    import onnx.helper
    bundle = tmp_path / "mb"
    export_bundle(magnet_pair[0], bundle, log=lambda s: None)
    graph = onnx.load(str(bundle / "lm_full.onnx"))
    mha = [n for n in graph.graph.node if n.op_type == "MultiHeadAttention"]
    bias = mha[0].input[5]   # the self-attention's additive band mask
    probe = onnx.helper.make_tensor_value_info(bias, onnx.TensorProto.FLOAT, None)
    graph.graph.output.append(probe)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    model = magnet_pair[0]
    cond = model._condition_rows(model._text(TEXTS), None, cfg=True)
    cross = magnet_pair[1].backend.prepare(cond).cross
    feeds = {name: value.numpy() for name, value in cross.items()}
    for frames, band, width in ((200, 5, 32 + 10), (200, 200, 200), (70, 1, 32 + 2)):
        feeds.update(input_ids=np.zeros((4, model.lm.n_q, frames), np.int64),
                     attn_band=np.array(band, np.int64), codebook=np.array(1, np.int64))
        bias_value = sess.run([bias], feeds)[0]
        assert bias_value.shape[-1] == width, (frames, band, bias_value.shape)


@pytest.mark.parametrize("mode", ["magnet", "hybrid"])
def test_sampled_magnet_codes_match_pytorch_for_the_same_seed(magnet_pair, mode):
    """Sampling on, band on (4 s: 198 frames, past torch's banded-in-blocks threshold), the
    model's sampling defaults. (Equality holds while no draw falls within float noise of a
    token boundary: seed 7 with top_k 50 flips one draw, with the masked graph as before.)"""
    torch_model, onnx_model = magnet_pair
    assert torch_model.attn_band == 5
    out = []
    for m in (torch_model, onnx_model):
        m.set_generation_params(duration=4.0, mode=mode, use_sampling=True,
                                decoding_steps=(3, 2, 2, 2), seed=1)
        out.append(m.generate(TEXTS, return_tokens=True)[1])
    assert torch.equal(out[0], out[1])


def test_a_bundle_keeps_the_checkpoints_sampling_defaults_and_span(magnet_pair, tmp_path):
    from engine.models.magnet import MAGNeT
    src = magnet_pair[0]
    model = MAGNeT("m", src.compression_model, src.lm, src.text_encoder, max_duration=10.0,
                   generation_defaults={"decoding_steps": [4, 2, 2, 2]}, ar_lm=src.ar_lm,
                   extra={"span_len": 2})
    export_bundle(model, tmp_path / "b", log=lambda s: None)
    loaded = load_model(tmp_path / "b", provider="cpu")
    loaded.set_generation_params(mode="hybrid", duration=2.0)
    assert loaded.magnet_params.decoding_steps == (4, 2, 2, 2) and loaded.span_len == 2


def test_step_graph_io_follows_manifest_and_attends_on_the_shared_buffers(bundle):
    manifest = read_manifest(bundle)
    spec = manifest["graphs"]["lm_step"]
    assert "If" not in op_types(bundle / spec["file"])
    # the buffers go into GroupQueryAttention and come out of it, through nothing else (no concat)
    nodes = onnx.load(str(bundle / spec["file"])).graph.node
    cache_io = {io["name"] for io in (*spec["inputs"], *spec["outputs"]) if ".decoder." in io["name"]}
    touching = [n.op_type for n in nodes if cache_io & {*n.input, *n.output}]
    assert touching == ["GroupQueryAttention"] * (len(cache_io) // 4), touching
    sess = ort.InferenceSession(str(bundle / spec["file"]), providers=["CPUExecutionProvider"])
    lm = manifest["lms"]["ar"]
    L, H, Dh = lm["num_layers"], lm["num_heads"], lm["head_dim"]
    past = [f"past_key_values.{i}.decoder.{kv}" for i in range(L) for kv in ("key", "value")]
    present = [f"present.{i}.decoder.{kv}" for i in range(L) for kv in ("key", "value")]
    cross = [f"past_key_values.{i}.encoder.{kv}" for i in range(L) for kv in ("key", "value")]
    assert [i.name for i in sess.get_inputs()] == [i["name"] for i in spec["inputs"]]
    assert [i["name"] for i in spec["inputs"]] == \
        ["input_ids", "past_sequence_length", *past, *cross]
    assert [o["name"] for o in spec["outputs"]] == ["logits", *present]
    for io in sess.get_inputs():
        want = next(i for i in spec["inputs"] if i["name"] == io.name)["shape"]
        assert io.shape == want
    for io in (*spec["inputs"][2:2 + 2 * L], *spec["outputs"][1:]):
        assert io["shape"] == ["batch", H, "max_seq", Dh], io
    assert manifest["lms"]["ar"]["graphs"]["prefill"] is None   # the prompt runs on lm_step


@pytest.mark.parametrize("batch,cond_seq", [(1, 1), (2, 4), (3, 9)])
def test_dynamic_past_length_from_zero_to_the_window(bundle, musicgen, batch, cond_seq):
    """lm_step at several sizes, past 0 .. window, against PyTorch: the new step's keys/values
    land at the past length, the rest of the buffer is the past unchanged."""
    from export.graphs import LMStepGraph
    manifest = read_manifest(bundle)
    lm_info = manifest["lms"]["ar"]
    window = lm_info["max_steps"]
    sess = ort.InferenceSession(str(bundle / "lm_step.onnx"), providers=["CPUExecutionProvider"])
    ref = LMStepGraph(musicgen.lm).eval()
    rng = np.random.default_rng(batch)
    L, H, Dh = lm_info["num_layers"], lm_info["num_heads"], lm_info["head_dim"]
    for past_len in (0, 1, 37, window - 1):
        feed = {"input_ids": rng.integers(0, musicgen.lm.card + 1, (batch, 4, 1)),
                "past_sequence_length": np.array(past_len, dtype=np.int64)}
        for i in range(L):
            for kv in ("key", "value"):
                feed[f"past_key_values.{i}.decoder.{kv}"] = rng.standard_normal(
                    (batch, H, past_len + 1, Dh), dtype=np.float32)
                feed[f"past_key_values.{i}.encoder.{kv}"] = rng.standard_normal(
                    (batch, H, cond_seq, Dh), dtype=np.float32)
        got = sess.run(None, feed)
        with torch.no_grad():
            want = ref(*[torch.from_numpy(np.asarray(feed[i.name])) for i in sess.get_inputs()])
        assert got[1].shape == (batch, H, past_len + 1, Dh)
        np.testing.assert_array_equal(got[1][:, :, :past_len],
                                      feed["past_key_values.0.decoder.key"][:, :, :past_len])
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), atol=2e-5)


def test_the_cache_is_one_buffer_per_key_value_for_the_whole_generation(musicgen, bundle):
    """Past and present share one OrtValue per layer key/value: onnxruntime writes each step
    into it (no concat, no reallocation), and the codes equal PyTorch's."""
    from engine.backends.base import ConditionTensors
    backend = open_bundle(bundle, provider="cpu").backend
    hidden, mask = musicgen.text_encoder.encode(TEXTS)
    ctx = backend.prepare(ConditionTensors(hidden, mask.float()))
    cache = backend.new_cache(ctx, 12)
    pointers = [v.data_ptr() for v in cache.values]
    values = list(cache.values)
    tokens = torch.randint(0, musicgen.lm.card, (2, 4, 12))
    logits = [backend.step(tokens[..., :4], cache, ctx)[0]]       # the prompt
    for s in range(4, 12):
        logits.append(backend.step(tokens[..., s:s + 1], cache, ctx)[0])
        # the presents onnxruntime returned: the buffers themselves, at full length
        presents = [o for o in cache.binding.get_outputs() if o.shape()[2:3] == [12]]
        assert [o.data_ptr() for o in presents] == pointers
    assert cache.length == 12 and cache.values == values
    assert [v.data_ptr() for v in cache.values] == pointers
    # the same steps through PyTorch's static cache
    from engine.modules.kv_cache import StaticKVCache
    lm = musicgen.lm
    static = StaticKVCache(lm.cfg.num_layers, 2, lm.cfg.num_heads, 12, lm.cfg.head_dim)
    with torch.no_grad():
        cross = lm.cross_kv(lm.project_condition(hidden, mask.float()))
        ref = lm(tokens, cross, cache=static, causal=True)
    np.testing.assert_allclose(torch.cat(logits, dim=2).numpy(), ref.numpy(), atol=1e-4)
    # and the buffer holds the keys PyTorch cached
    np.testing.assert_allclose(cache.values[0].numpy(), static.keys[0].numpy(), atol=1e-5)


def test_a_bundle_of_an_older_format_is_refused_in_one_line(bundle, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format_version 1 is not supported") as err:
        open_bundle(old, provider="cpu")
    assert "\n" not in str(err.value) and "barforge export" in str(err.value)


def test_codec_graphs_keep_length_and_batch_dynamic(bundle, musicgen):
    codec = open_bundle(bundle, provider="cpu").codec
    assert "min_frames" not in read_manifest(bundle)["codec"]
    for batch, frames in ((1, 1), (2, 2), (1, 3), (1, 5), (2, 13), (3, 40)):
        wav = torch.randn(batch, 1, frames * 640)
        codes = codec.encode(wav)
        assert torch.equal(codes, musicgen.compression_model.encode(wav))
        out = codec.decode(codes)
        with torch.no_grad():
            ref = musicgen.compression_model.decode(codes)
        assert out.shape == ref.shape == (batch, 1, frames * 640)
        assert float((out - ref).abs().max()) < 1e-5


def test_codec_encoder_graph_runs_on_less_than_one_frame_of_samples(bundle, musicgen):
    codec = open_bundle(bundle, provider="cpu").codec
    for samples in (1, 100, 639, 641):
        wav = torch.randn(1, 1, samples)
        codes = codec.encode(wav)
        assert codes.shape[-1] == -(-samples // 640)
        assert torch.equal(codes, musicgen.compression_model.encode(wav))


def test_export_refuses_a_model_it_cannot_represent(tmp_path, musicgen):
    half = build_debug_model()
    half.lm.half()
    with pytest.raises(ValueError, match="float32"):
        export_bundle(half, tmp_path / "half", log=lambda s: None)
    from dataclasses import replace

    from engine.models.lm import LMModel
    melody = build_debug_model()   # chroma prepended without the text: not MusicGen-Melody
    melody.lm = LMModel(replace(musicgen.lm.cfg, cond_dim=0, chroma_bins=12))
    with pytest.raises(ValueError, match="chroma and text both prepended"):
        export_bundle(melody, tmp_path / "melody", log=lambda s: None)
    assert not (tmp_path / "half").exists() and not (tmp_path / "melody.partial").exists()


def test_bundle_with_wrong_sha256_or_missing_file_is_refused(bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["lm_step.onnx"]["sha256"] = "0" * 64
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="lm_step.onnx has sha256"):
        open_bundle(bad, provider="cpu")
    missing = tmp_path / "missing"
    shutil.copytree(bundle, missing)
    (missing / "codec_decoder.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="codec_decoder.onnx .*missing"):
        open_bundle(missing, provider="cpu")
    with pytest.raises(FileNotFoundError, match="not an ONNX bundle"):
        open_bundle(tmp_path, provider="cpu")


def test_manifest_lists_model_numbers_and_every_file(bundle):
    m = read_manifest(bundle)
    assert (m["sample_rate"], m["frame_rate"], m["num_codebooks"]) == (32000, 50.0, 4)
    assert m["special_token_id"] == m["card"] and m["opset"] == 17
    assert set(m["graphs"]) == {"text_encoder", "codec_encoder", "codec_decoder", "lm_cross",
                                "lm_step"}
    assert m["format_version"] == 2
    assert all(f in m["files"] for f in ("tokenizer/tokenizer.json", "lm_step.onnx"))
    for g in m["graphs"].values():
        onnx.checker.check_model(str(bundle / g["file"]))


def test_cpu_sessions_open_the_saved_onnxruntime_optimized_copies(bundle):
    m = read_manifest(bundle)
    for name, graph in m["graphs"].items():
        assert graph["cpu_file"] == f"{name}.cpu.onnx" and graph["cpu_file"] in m["files"]
        # the copy is onnxruntime's optimized graph: fewer nodes than the export's
        assert len(onnx.load(str(bundle / graph["cpu_file"])).graph.node) < \
            len(onnx.load(str(bundle / graph["file"])).graph.node), name
    parts = open_bundle(bundle, provider="cpu")
    assert parts.backend.step_session._model_path.endswith("lm_step.cpu.onnx")
    assert parts.codec.decoder._model_path.endswith("codec_decoder.cpu.onnx")
