"""Test-only converter: a transformers ``Musicgen(Melody)ForConditionalGeneration`` saved in
audiocraft's layout (``state_dict.bin`` = {'best_state', 'xp.cfg'}, the inverse of transformers'
convert_musicgen(_melody)_transformers.py), so loaders are checked against the same weights in
both layouts. The engine reads audiocraft checkpoints but never writes them."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

TEXT_PROJ = "condition_provider.conditioners.description.output_proj."
CHROMA_PROJ = "condition_provider.conditioners.self_wav.output_proj."
CHROMA_WINDOW = "condition_provider.conditioners.self_wav.chroma.spec.window"
CHROMA_N_FFT = 2 ** 14


def _lm_state(model) -> dict[str, torch.Tensor]:
    """The composite model's LM under audiocraft's names (q/k/v packed as ``in_proj_weight``)."""
    dec = model.decoder.model.decoder
    state = {}
    for k, (emb, head) in enumerate(zip(dec.embed_tokens, model.decoder.lm_heads)):
        state[f"emb.{k}.weight"], state[f"linears.{k}.weight"] = emb.weight, head.weight
    for i, layer in enumerate(dec.layers):
        p = f"transformer.layers.{i}."
        attns = [("self_attn", layer.self_attn), ("cross_attention", getattr(layer, "encoder_attn", None))]
        norms = [("norm1", layer.self_attn_layer_norm),
                 ("norm_cross", getattr(layer, "encoder_attn_layer_norm", None)),
                 ("norm2", layer.final_layer_norm)]
        for ours, theirs in attns:
            if theirs is not None:
                state[p + ours + ".in_proj_weight"] = torch.cat(
                    [theirs.q_proj.weight, theirs.k_proj.weight, theirs.v_proj.weight])
                state[p + ours + ".out_proj.weight"] = theirs.out_proj.weight
        for ours, theirs in norms:
            if theirs is not None:
                state[p + ours + ".weight"], state[p + ours + ".bias"] = theirs.weight, theirs.bias
        state[p + "linear1.weight"], state[p + "linear2.weight"] = layer.fc1.weight, layer.fc2.weight
    state["out_norm.weight"], state["out_norm.bias"] = dec.layer_norm.weight, dec.layer_norm.bias
    state[TEXT_PROJ + "weight"], state[TEXT_PROJ + "bias"] = (model.enc_to_dec_proj.weight,
                                                              model.enc_to_dec_proj.bias)
    return state


def write_audiocraft_lm(directory: Path, model, *, channels: int = 1,
                        segment_duration: float | None = None) -> Path:
    """``directory/state_dict.bin`` holding ``model``'s LM as audiocraft exports it; a melody
    model gets audiocraft's chroma2music conditioner config and its chroma STFT window."""
    melody = hasattr(model, "audio_enc_to_dec_proj")
    dec_cfg = model.decoder.config
    state = _lm_state(model)
    xp = {"lm_model": "transformer_lm", "channels": channels, "sample_rate": 32000,
          "compression_model_checkpoint": "//pretrained/facebook/encodec_32khz",
          "transformer_lm": {"dim": dec_cfg.hidden_size, "num_heads": dec_cfg.num_attention_heads,
                             "num_layers": dec_cfg.num_hidden_layers,
                             "hidden_scale": dec_cfg.ffn_dim // dec_cfg.hidden_size,
                             "n_q": dec_cfg.num_codebooks, "card": dec_cfg.vocab_size,
                             "causal": True, "norm_first": True, "bias_ff": False,
                             "bias_attn": False, "bias_proj": False,
                             "positional_embedding": "sin", "norm": "layer_norm",
                             "activation": "gelu"},
          "fuser": {"cross": ["description"], "prepend": [], "sum": []},
          "conditioners": {"description": {"model": "t5", "t5": {"name": "t5-base"}}},
          "classifier_free_guidance": {"inference_coef": 3.0},
          "generate": {"lm": {"use_sampling": True, "temp": 1.0, "top_k": 250, "top_p": 0.0}}}
    if melody:
        state[CHROMA_PROJ + "weight"] = model.audio_enc_to_dec_proj.weight
        state[CHROMA_PROJ + "bias"] = model.audio_enc_to_dec_proj.bias
        state[CHROMA_WINDOW] = torch.hann_window(CHROMA_N_FFT)
        xp["fuser"] = {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1,
                       "sum": [], "prepend": ["self_wav", "description"], "cross": [],
                       "input_interpolate": []}
        xp["conditioners"]["self_wav"] = {
            "model": "chroma_stem",
            "chroma_stem": {"sample_rate": "${sample_rate}", "n_chroma": 12, "radix2_exp": 14,
                            "argmax": True, "match_len_on_eval": False, "eval_wavs": None,
                            "n_eval_wavs": 100, "cache_path": None}}
    if segment_duration is not None:
        xp["dataset"] = {"segment_duration": segment_duration}
    directory.mkdir(parents=True, exist_ok=True)
    pkg = {"best_state": {k: v.detach().clone() for k, v in state.items()},
           "xp.cfg": yaml.safe_dump(xp), "version": "1.0", "exported": True}
    torch.save(pkg, directory / "state_dict.bin")
    return directory / "state_dict.bin"
