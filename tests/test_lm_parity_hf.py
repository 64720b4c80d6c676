"""LM checkpoints: logits match transformers' Musicgen on the same weights (HF and audiocraft
layouts), and broken checkpoints are refused with errors naming the file and tensor.

The reference model is a tiny random ``MusicgenForConditionalGeneration`` built here (tiny T5,
tiny 32 kHz-style EnCodec, 2-layer decoder). Its tokenizer is a tiny sentencepiece model
trained in the test on a few captions (T5's tokenizer is a sentencepiece model too), so the
whole text path (strings -> T5 -> projection -> cross-attention) is compared, offline.
"""
import io
import json
import shutil

import pytest
import torch
import yaml

from engine.loaders.lm_checkpoint import load_lm_checkpoint
from tests.audiocraft_layout import write_audiocraft_lm

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

CARD, K, DIM, LAYERS, HEADS, TEXT_DIM = 64, 4, 64, 2, 4, 24
CAPTIONS = ["dusty boom bap drums with vinyl crackle", "lofi piano chords at night",
            "jazz trio at 90 bpm", "heavy metal guitar riff", "ambient pads and rain"] * 8


def _tokenizer(directory):
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS), model_writer=buf,
                                   vocab_size=48, model_type="unigram", pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    (directory / "spiece.model").write_bytes(buf.getvalue())
    tok = transformers.T5Tokenizer(vocab_file=str(directory / "spiece.model"), extra_ids=0)
    tok.save_pretrained(directory)
    return tok


def _hf_configs(n_q=K, channels=1):
    t5 = transformers.T5Config(vocab_size=64, d_model=TEXT_DIM, d_kv=8, d_ff=48, num_layers=2,
                               num_heads=3, feed_forward_proj="relu")
    enc = transformers.EncodecConfig(
        sampling_rate=32000, audio_channels=1, num_filters=4, codebook_size=CARD, codebook_dim=8,
        hidden_size=8, upsampling_ratios=[8, 5, 4, 4], num_residual_layers=1, num_lstm_layers=2,
        target_bandwidths=[0.3 * (n_q // channels)], use_causal_conv=False, normalize=False)
    dec = transformers.MusicgenDecoderConfig(
        vocab_size=CARD, hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        ffn_dim=4 * DIM, num_codebooks=n_q, audio_channels=channels, max_position_embeddings=128,
        pad_token_id=CARD, bos_token_id=CARD, decoder_start_token_id=CARD)
    return t5, enc, dec


def _randomize_norms(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("musicgen_hf")
    t5, enc, dec = _hf_configs()
    model = transformers.MusicgenForConditionalGeneration(
        transformers.MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(),
                                    decoder=dec.to_dict())).eval()
    _randomize_norms(model)
    model.save_pretrained(directory)
    _tokenizer(directory)
    return directory, model


def _codes(batch, steps, n_q=K, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, CARD + 1, (batch, n_q, steps), generator=g)


def _ours(loaded, hidden, mask, codes):
    lm = loaded.lm
    with torch.no_grad():
        return lm(codes, lm.cross_kv(lm.project_condition(hidden, mask)))


def test_hf_decoder_logits_match_on_the_same_encoder_states(hf_dir):
    directory, model = hf_dir
    loaded = load_lm_checkpoint(directory)
    assert loaded.family == "musicgen" and loaded.audio_channels == 1
    assert (loaded.lm.n_q, loaded.lm.card, loaded.lm.cfg.cond_dim) == (K, CARD, TEXT_DIM)
    hidden = torch.randn(2, 5, TEXT_DIM, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 5, dtype=torch.long)
    codes = _codes(2, 9)
    with torch.no_grad():
        projected = model.enc_to_dec_proj(hidden) * mask[..., None]
        ref = model.decoder(input_ids=codes.reshape(2 * K, 9), encoder_hidden_states=projected,
                            encoder_attention_mask=mask).logits.reshape(2, K, 9, CARD)
    ours = _ours(loaded, hidden, mask, codes)
    assert ours.shape == (2, K, 9, CARD)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_hf_full_model_logits_match_from_text(hf_dir):
    directory, model = hf_dir
    loaded = load_lm_checkpoint(directory)
    texts = ["lofi piano chords"]
    hidden, mask = loaded.text_encoder.encode(texts)
    assert hidden.shape[-1] == loaded.text_encoder.dim == TEXT_DIM
    inputs = transformers.AutoTokenizer.from_pretrained(directory)(texts, return_tensors="pt")
    codes = _codes(1, 7)
    with torch.no_grad():
        ref = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    decoder_input_ids=codes.reshape(K, 7)).logits.reshape(1, K, 7, CARD)
    torch.testing.assert_close(_ours(loaded, hidden, mask, codes), ref, rtol=1e-4, atol=1e-4)
    # audiocraft's null condition: an empty text has an all-zero mask.
    _, empty_mask = loaded.text_encoder.encode(["lofi", ""])
    assert empty_mask[1].sum() == 0 and empty_mask[0].sum() > 0


def _write_audiocraft(directory, model, n_q=K, channels=1):
    """The HF model's weights under audiocraft's names, with an xp.cfg, as audiocraft exports."""
    assert model.decoder.config.num_codebooks == n_q
    return write_audiocraft_lm(directory, model, channels=channels)


def test_audiocraft_layout_gives_the_same_logits(hf_dir, tmp_path, monkeypatch):
    directory, model = hf_dir
    file = _write_audiocraft(tmp_path / "ac", model)
    t5_dir = tmp_path / "t5"
    model.text_encoder.save_pretrained(t5_dir)
    transformers.AutoTokenizer.from_pretrained(directory).save_pretrained(t5_dir)
    loaded = load_lm_checkpoint(file, t5_dir=t5_dir)
    hf_loaded = load_lm_checkpoint(directory)
    assert loaded.family == "musicgen" and loaded.generation["cfg_coef"] == 3.0
    hidden, mask = loaded.text_encoder.encode(["jazz trio", "heavy metal guitar riff"])
    hf_hidden, hf_mask = hf_loaded.text_encoder.encode(["jazz trio", "heavy metal guitar riff"])
    torch.testing.assert_close(hidden, hf_hidden)
    codes = _codes(2, 8)
    torch.testing.assert_close(_ours(loaded, hidden, mask, codes),
                               _ours(hf_loaded, hf_hidden, hf_mask, codes), rtol=1e-5, atol=1e-5)
    monkeypatch.delenv("BARFORGE_T5_DIR", raising=False)
    with pytest.raises(ValueError, match="BARFORGE_T5_DIR"):
        load_lm_checkpoint(file)


def test_stereo_checkpoints_load_with_eight_codebooks(tmp_path):
    torch.manual_seed(3)
    t5, enc, dec = _hf_configs(n_q=8, channels=2)
    model = transformers.MusicgenForConditionalGeneration(
        transformers.MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(),
                                    decoder=dec.to_dict())).eval()
    model.save_pretrained(tmp_path / "hf")
    loaded = load_lm_checkpoint(tmp_path / "hf", load_text_encoder=False)
    assert loaded.audio_channels == 2 and loaded.lm.n_q == 8
    ac = load_lm_checkpoint(_write_audiocraft(tmp_path / "ac", model, n_q=8, channels=2),
                            load_text_encoder=False)
    assert ac.audio_channels == 2
    hidden = torch.randn(1, 3, TEXT_DIM)
    mask = torch.ones(1, 3, dtype=torch.long)
    codes = _codes(1, 5, n_q=8)
    with torch.no_grad():
        ref = model.decoder(input_ids=codes.reshape(8, 5),
                            encoder_hidden_states=model.enc_to_dec_proj(hidden),
                            encoder_attention_mask=mask).logits.reshape(1, 8, 5, CARD)
    torch.testing.assert_close(_ours(loaded, hidden, mask, codes), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(_ours(ac, hidden, mask, codes), ref, rtol=1e-4, atol=1e-4)


def test_truncated_safetensors_is_refused_naming_the_file(hf_dir, tmp_path):
    directory, _ = hf_dir
    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_lm_checkpoint(broken)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_lm_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither config.json"):
        load_lm_checkpoint(tmp_path / "empty")
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.bin"):
        load_lm_checkpoint(tmp_path / "junk.bin")


def test_wrong_codebook_count_is_refused_naming_the_tensor(hf_dir, tmp_path):
    directory, model = hf_dir
    wrong = tmp_path / "wrong"
    shutil.copytree(directory, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["decoder"]["num_codebooks"] = 8
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model.safetensors: missing tensor for 'emb.4.weight'"):
        load_lm_checkpoint(wrong, load_text_encoder=False)
    file = _write_audiocraft(tmp_path / "ac", model)
    pkg = torch.load(file, weights_only=True)
    xp = yaml.safe_load(pkg["xp.cfg"])
    xp["transformer_lm"]["n_q"] = 3
    pkg["xp.cfg"] = yaml.safe_dump(xp)
    torch.save(pkg, file)
    with pytest.raises(ValueError, match=r"state_dict.bin: unexpected tensor 'emb.3.weight'"):
        load_lm_checkpoint(file, load_text_encoder=False)


def test_shape_mismatch_is_refused_naming_the_tensor(hf_dir, tmp_path):
    directory, model = hf_dir
    file = _write_audiocraft(tmp_path / "ac", model)
    pkg = torch.load(file, weights_only=True)
    pkg["best_state"]["transformer.layers.1.linear1.weight"] = torch.zeros(3 * DIM, DIM)
    torch.save(pkg, file)
    with pytest.raises(ValueError, match=r"'transformer.layers.1.linear1.weight' has shape"):
        load_lm_checkpoint(file, load_text_encoder=False)


def hf_melody_dir(directory, seed=4, chroma_length=6, max_positions=128):
    """A tiny random ``MusicgenMelodyForConditionalGeneration`` saved with its tokenizer."""
    torch.manual_seed(seed)
    t5, enc, _ = _hf_configs()
    dec = transformers.MusicgenMelodyDecoderConfig(
        vocab_size=CARD, hidden_size=DIM, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        ffn_dim=4 * DIM, num_codebooks=K, max_position_embeddings=max_positions,
        pad_token_id=CARD, bos_token_id=CARD, decoder_start_token_id=CARD)
    model = transformers.MusicgenMelodyForConditionalGeneration(
        transformers.MusicgenMelodyConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(),
                                          decoder=dec.to_dict(), num_chroma=12,
                                          chroma_length=chroma_length)).eval()
    _randomize_norms(model)
    model.save_pretrained(directory)
    _tokenizer(directory)
    return model


def test_hf_melody_logits_match_with_the_prepended_condition(tmp_path):
    model = hf_melody_dir(tmp_path)
    loaded = load_lm_checkpoint(tmp_path)
    assert loaded.family == "musicgen-melody" and loaded.lm.cfg.cond_dim == 0
    assert loaded.extra["chroma_length"] == 6
    texts = ["jazz trio"]
    hidden, mask = loaded.text_encoder.encode(texts)
    inputs = transformers.AutoTokenizer.from_pretrained(tmp_path)(texts, return_tensors="pt")
    chroma = torch.nn.functional.one_hot(torch.randint(0, 12, (1, 6)), 12).float()
    codes = _codes(1, 7)
    with torch.no_grad():
        ref = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    input_features=chroma, decoder_input_ids=codes.reshape(K, 7)).logits
        ref = ref.reshape(1, K, -1, CARD)[:, :, -7:]
        prefix = loaded.lm.project_prefix(hidden, mask, chroma)
        ours = loaded.lm(codes, None, prefix=prefix)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_sharded_safetensors_load_the_same_weights(hf_dir, tmp_path):
    directory, model = hf_dir
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    shutil.copy(directory / "spiece.model", tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(directory / name, tmp_path)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    sharded = load_lm_checkpoint(tmp_path)
    single = load_lm_checkpoint(directory)
    for (name, a), b in zip(sharded.lm.state_dict().items(), single.lm.state_dict().values()):
        assert torch.equal(a, b), name
