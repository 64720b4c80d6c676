"""Greedy CFG generation matches transformers' MusicgenForConditionalGeneration token for token.

A small random HF MusicGen (T5 text encoder, EnCodec, decoder) with a word-level tokenizer is
built and saved in the test, then loaded through ``MusicGen.get_pretrained(dir)``.
"""
import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402

from engine.models.encodec import InterleavedStereoCodec  # noqa: E402
from engine import MusicGen  # noqa: E402

CARD = 64
WORDS = ["<pad>", "</s>", "<unk>", "lofi", "drums", "jazz", "piano", "calm", "bpm:", "93.7"]


def _save_tiny_musicgen(directory, channels: int):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(directory)
    text = transformers.T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                 num_heads=2)
    audio = transformers.EncodecConfig(
        sampling_rate=32000, audio_channels=1, num_filters=4, hidden_size=16,
        upsampling_ratios=[8, 5, 4, 4], codebook_size=CARD, target_bandwidths=[1.2],
        num_lstm_layers=1, use_causal_conv=False, normalize=False, pad_mode="reflect")
    decoder = transformers.MusicgenDecoderConfig(
        vocab_size=CARD, max_position_embeddings=256, num_hidden_layers=2, ffn_dim=64,
        num_attention_heads=2, hidden_size=32, num_codebooks=4 * channels, pad_token_id=CARD,
        bos_token_id=CARD, audio_channels=channels)
    config = transformers.MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(),
                                         decoder=decoder.to_dict())
    torch.manual_seed(0)
    model = transformers.MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():  # sharper logits: greedy choices far from ties
        for head in model.decoder.lm_heads:
            head.weight.mul_(10.0)
    for name in ("decoder_start_token_id", "pad_token_id", "bos_token_id"):
        setattr(model.generation_config, name, CARD)
    model.save_pretrained(directory)
    return model, tokenizer


def _hf_generate(model, tokenizer, descriptions, frames, delay_steps):
    """HF's audio and the codes it decoded (captured at its codec's decode)."""
    captured = []
    decode = model.audio_encoder.decode

    def capture(audio_codes, *args, **kwargs):
        captured.append(audio_codes[0].clone())
        return decode(audio_codes, *args, **kwargs)

    model.audio_encoder.decode = capture
    inputs = tokenizer(descriptions, return_tensors="pt", padding=True)
    with torch.no_grad():
        audio = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                               do_sample=False, guidance_scale=3.0,
                               max_new_tokens=frames + delay_steps)
    codes = captured[0] if len(captured) == 1 else InterleavedStereoCodec.interleave(*captured)
    return audio, codes


@pytest.mark.parametrize("channels", [1, 2])
def test_greedy_cfg_generation_matches_transformers(tmp_path, channels):
    hf_model, tokenizer = _save_tiny_musicgen(tmp_path, channels)
    frames = 24
    descriptions = ["lofi drums", "jazz piano"]  # same token count: no padding in the batch
    hf_audio, hf_codes = _hf_generate(hf_model, tokenizer, descriptions, frames,
                                      delay_steps=3)  # max delay 3 in mono and stereo
    ours = MusicGen.get_pretrained(str(tmp_path))
    assert ours.audio_channels == channels and ours.sample_rate == 32000
    ours.set_generation_params(duration=frames / ours.frame_rate, use_sampling=False, cfg_coef=3.0)
    wav, codes = ours.generate(descriptions, return_tokens=True)
    assert codes.shape == (2, 4 * channels, frames)
    assert torch.equal(codes, hf_codes)
    assert wav.shape == hf_audio.shape
    torch.testing.assert_close(wav, hf_audio, atol=1e-4, rtol=0)
