"""Key conditioning: the asked key is one more cross-attention token (engine/conditioners/key.py)."""
import dataclasses

import pytest
import torch

from engine.backends.base import ConditionTensors
from engine.backends.torch_backend import TorchBackend
from engine.conditioners.key import KEY_CLASSES, caption_key, key_index
from engine.conditioners.text import debug_text_encoder
from engine.models.encodec import EncodecModel, debug_codec_config
from engine.models.lm import LMConfig, LMModel, debug_lm_config
from engine.models.musicgen import MusicGen
from engine.recipes.training.lm import LMTask, _init_weights

CFG = dataclasses.replace(debug_lm_config(), key_classes=KEY_CLASSES)


@pytest.mark.parametrize("caption,expected", [
    ("dusty drums. bpm: 90.0. key: c minor.", key_index("C", "minor")),
    ("dark pads in F# minor", 1 + 6 + 12),
    ("bright keys, Gb major", 1 + 6),            # enharmonic: the same class as F# major
    ("Bb major", 1 + 10), ("ab minor", 1 + 8 + 12),
    ("club minor chords", 0), ("no key at all", 0), (None, 0),
])
def test_captions_state_their_key(caption, expected):
    assert caption_key(caption) == expected


def test_bad_keys_name_the_input():
    with pytest.raises(ValueError, match="tonic"):
        key_index("H", "minor")
    with pytest.raises(ValueError, match="mode"):
        key_index("C", "dorian")
    with pytest.raises(ValueError, match="key_classes needs a cross-attention"):
        LMConfig(n_q=4, card=64, dim=32, num_heads=2, num_layers=2, cond_dim=0, chroma_bins=12,
                 prefix_text_dim=32, key_classes=KEY_CLASSES)


def _lm() -> LMModel:
    torch.manual_seed(0)
    lm = LMModel(CFG).eval()
    _init_weights(lm, std=0.5)       # trained-looking weights, row 0 of the key table kept zero
    return lm


@torch.inference_mode()
def test_the_key_is_one_more_condition_token_and_no_key_is_zero():
    lm = _lm()
    cross, mask = torch.randn(3, 5, CFG.cond_dim), torch.ones(3, 5)
    emb = lm.project_condition(cross, mask, torch.tensor([0, 3, 15]))
    assert emb.shape == (3, 6, CFG.dim)
    assert float(emb[0, 5].abs().max()) == 0.0 and float(emb[1, 5].abs().max()) > 0
    assert torch.equal(lm.project_condition(cross, mask), lm.project_condition(cross, mask, torch.zeros(3, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"key classes must lie in \[0, 24\]"):
        lm.project_condition(cross, mask, torch.tensor([0, 25, 1]))
    with pytest.raises(ValueError, match="key must be"):
        lm.project_condition(cross, mask, torch.tensor([1, 2]))


@torch.inference_mode()
def test_the_key_changes_the_logits_and_null_rows_have_none():
    model = MusicGen("key", EncodecModel(debug_codec_config()).eval(), _lm(),
                     debug_text_encoder(dim=CFG.cond_dim))
    keys = model._key(["loop. key: d minor", "free", "loop in Eb major"])
    assert keys.tolist() == [key_index("D", "minor"), 0, key_index("Eb", "major")]
    assert model._key(["free", None]) is None
    rows = model._condition_rows(model._text(["a", "b"]), None, True, None, torch.tensor([5, 7]))
    assert rows.key.tolist() == [5, 7, 0, 0]
    backend = TorchBackend(model.lm)
    tokens = torch.randint(CFG.card, (1, CFG.n_q, 6))
    text = torch.randn(1, 4, CFG.cond_dim), torch.ones(1, 4)
    logits = [model.lm(tokens, backend.prepare(ConditionTensors(*text, key=torch.tensor([k]))).cross_kv)
              for k in (0, 1, 13)]
    assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[1], logits[2])


def test_training_learns_the_key_and_a_warm_start_keeps_the_old_model(tmp_path):
    from engine.recipes.training.common import Dist

    class Batches:           # a fixed batch: codes, text, mask, beat (none), key
        def sample(self, batch):
            g = torch.Generator().manual_seed(0)
            return (torch.randint(CFG.card, (batch, CFG.n_q, 8), generator=g),
                    torch.randn(batch, 3, CFG.cond_dim, generator=g), torch.ones(batch, 3),
                    torch.zeros(batch, 3), torch.tensor([1, 14, 0, 5][:batch]))

    dist = Dist(0, 1, torch.device("cpu"))
    plain = LMTask(debug_lm_config(), Batches(), dist, batch_size=4, lr=1e-3, steps=2)
    task = LMTask(CFG, Batches(), dist, batch_size=4, lr=1e-2, steps=2, cond_dropout=0.0,
                  init_state=plain.model.state_dict())
    assert float(task.model.key_emb.weight.detach()[0].abs().max()) == 0.0
    before = task.model.key_emb.weight.detach().clone()
    task.update(Batches().sample(4))
    moved = (task.model.key_emb.weight.detach() - before).abs().amax(dim=1)
    assert float(moved[0]) == 0.0 and float(task.model.key_emb.weight.detach()[0].abs().max()) == 0.0
    assert float(moved[[1, 14, 5]].min()) > 10 * float(moved[2])   # asked keys learn; key 2 only decays
