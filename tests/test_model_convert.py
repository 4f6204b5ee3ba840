"""VLP's model.N.bin key mapping and `vlp convert-checkpoint`, on a fabricated state dict."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from transformers import BertConfig, BertModel

from vlp.cli import main
from vlp.errors import VLPError
from vlp.model import UnifiedVLP, VLPConfig
from vlp.model.convert import from_vlp_bin

H, FF, VOCAB, POS, D, C, ANSWERS = 16, 24, 120, 16, 6, 2, 5


def vlp_state(types: int = 6, prefix: str = "") -> OrderedDict:
    """A state dict with the names and layout of VLP's BertForPreTrainingLossMask
    (--enable_butd, VQA head), small sizes, random values."""
    g = torch.Generator().manual_seed(0)
    shapes = {
        "bert.embeddings.word_embeddings.weight": (VOCAB, H),
        "bert.embeddings.position_embeddings.weight": (POS, H),
        "bert.embeddings.token_type_embeddings.weight": (types, H),
        "bert.embeddings.LayerNorm.weight": (H,), "bert.embeddings.LayerNorm.bias": (H,),
        "bert.pooler.dense.weight": (H, H), "bert.pooler.dense.bias": (H,),
        "cls.predictions.bias": (VOCAB,),
        "cls.predictions.transform.dense.weight": (H, H),
        "cls.predictions.transform.dense.bias": (H,),
        "cls.predictions.transform.LayerNorm.weight": (H,),
        "cls.predictions.transform.LayerNorm.bias": (H,),
        "vis_embed.0.weight": (D, D), "vis_embed.0.bias": (D,),
        "vis_embed.2.weight": (H, D), "vis_embed.2.bias": (H,),
        "vis_pe_embed.0.weight": (H, C + 6), "vis_pe_embed.0.bias": (H,),
        "ans_classifier.0.weight": (2 * H, H), "ans_classifier.0.bias": (2 * H,),
        "ans_classifier.2.weight": (ANSWERS, 2 * H), "ans_classifier.2.bias": (ANSWERS,),
    }
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (H, H), (H,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (H,), (H,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (FF, H), (FF,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (H, FF), (H,)
    state = OrderedDict((prefix + k, torch.randn(*s, generator=g)) for k, s in shapes.items())
    # VLP's output layer is the word embedding matrix itself, saved under both names.
    state[prefix + "cls.predictions.decoder.weight"] = state[prefix + "bert.embeddings.word_embeddings.weight"]
    return state


# Hand-written: VLP name -> our name, one per kind of parameter.
PAIRS = [
    ("bert.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("bert.embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
    ("bert.embeddings.LayerNorm.bias", "embeddings.LayerNorm.bias"),
    ("bert.encoder.layer.1.attention.self.value.weight", "encoder.layer.1.attention.self.value.weight"),
    ("bert.encoder.layer.0.attention.output.LayerNorm.weight", "encoder.layer.0.attention.output.LayerNorm.weight"),
    ("bert.encoder.layer.1.intermediate.dense.bias", "encoder.layer.1.intermediate.dense.bias"),
    ("bert.encoder.layer.0.output.dense.weight", "encoder.layer.0.output.dense.weight"),
    ("cls.predictions.transform.dense.weight", "mlm_head.dense.weight"),
    ("cls.predictions.transform.LayerNorm.bias", "mlm_head.LayerNorm.bias"),
    ("cls.predictions.bias", "mlm_head.bias"),
    ("vis_embed.0.weight", "region.feature.0.weight"),
    ("vis_embed.2.bias", "region.feature.2.bias"),
    ("vis_pe_embed.0.weight", "region.location.0.weight"),
    ("ans_classifier.0.bias", "vqa_head.0.bias"),
    ("ans_classifier.2.weight", "vqa_head.2.weight"),
]


def save(state, tmp_path, name="model.30.bin"):
    torch.save(state, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("prefix", ["", "module."])
def test_vlp_keys_land_on_our_parameters(tmp_path, prefix):
    state = vlp_state(prefix=prefix)
    model = from_vlp_bin(UnifiedVLP, save(state, tmp_path), num_attention_heads=2, max_regions=4)
    ours = model.state_dict()
    for vlp_name, our_name in PAIRS:
        assert torch.equal(ours[our_name], state[prefix + vlp_name]), our_name
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.vocab_size) == (H, 2, FF, VOCAB)
    assert (c.region_feature_dim, c.region_classes, c.vqa_answers, c.type_vocab_size) == (D, C, ANSWERS, 6)
    assert c.layer_norm_eps == 1e-5


def test_a_two_type_checkpoint_gets_vlps_six_rows(tmp_path):
    state = vlp_state(types=2)
    model = from_vlp_bin(UnifiedVLP, save(state, tmp_path), num_attention_heads=2,
                         max_regions=4, type_vocab_size=6)
    old = state["bert.embeddings.token_type_embeddings.weight"]
    new = model.embeddings.token_type_embeddings.weight
    assert torch.equal(new, old[[0, 1, 0, 0, 0, 1]])


def test_unexpected_and_missing_keys_are_errors_that_name_them(tmp_path):
    state = vlp_state()
    state["cls.seq_relationship.weight"] = torch.zeros(2, H)
    with pytest.raises(VLPError, match="cls.seq_relationship.weight"):
        from_vlp_bin(UnifiedVLP, save(state, tmp_path), num_attention_heads=2, max_regions=4)
    state = vlp_state()
    del state["bert.encoder.layer.1.output.dense.bias"]
    with pytest.raises(VLPError, match=r"missing keys: encoder\.layer\.1\.output\.dense\.bias"):
        from_vlp_bin(UnifiedVLP, save(state, tmp_path), num_attention_heads=2, max_regions=4)


def test_a_bert_file_is_not_taken_for_a_vlp_checkpoint(tmp_path):
    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=FF))
    with pytest.raises(VLPError, match="not a VLP checkpoint"):
        from_vlp_bin(UnifiedVLP, save(bert.state_dict(), tmp_path))


def test_cli_converts_a_vlp_bin_into_a_loadable_directory(tmp_path, capsys):
    state = vlp_state()
    path = save(state, tmp_path)
    out = tmp_path / "converted"
    rc = main(["convert-checkpoint", "--from", "vlp-bin", str(path), "--out", str(out),
               "--num-heads", "2", "--max-regions", "4"])
    assert rc == 0 and "2 layers, hidden 16" in capsys.readouterr().out
    model = UnifiedVLP.from_pretrained(out)
    assert torch.equal(model.region.location[0].weight, state["vis_pe_embed.0.weight"])
    # A second run into the same directory refuses rather than mixing files.
    assert main(["convert-checkpoint", "--from", "vlp-bin", str(path), "--out", str(out),
                 "--num-heads", "2", "--max-regions", "4"]) == 2
    assert "--out" in capsys.readouterr().err


def test_cli_converts_a_bert_directory_with_its_vocabulary(tmp_path, capsys):
    bert_dir = tmp_path / "bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=FF)).save_pretrained(bert_dir)
    (bert_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[CLS]", "[SEP]", "[MASK]"] +
                                                  [f"w{i}" for i in range(VOCAB - 4)]) + "\n")
    out = tmp_path / "out"
    assert main(["convert-checkpoint", "--from", "hf-bert", str(bert_dir), "--out", str(out),
                 "--region-feature-dim", "6", "--region-classes", "2", "--max-regions", "4"]) == 0
    model = UnifiedVLP.from_pretrained(out)
    assert (out / "vocab.txt").is_file()
    assert (model.config.cls_token_id, model.config.type_vocab_size) == (1, 6)


def test_cli_reports_a_missing_file_on_one_line(tmp_path, capsys):
    rc = main(["convert-checkpoint", "--from", "vlp-bin", str(tmp_path / "nope.bin"),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.bin" in err and len(err.strip().splitlines()) == 1


def test_region_layer_starts_from_a_detectors_fc7_and_refuses_other_sizes():
    model = UnifiedVLP(
        VLPConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=FF, max_position_embeddings=POS,
                  region_feature_dim=D, region_hidden_size=D, region_classes=C, max_regions=4))
    weight, bias = torch.randn(D, D), torch.randn(D)
    model.region.init_from_fc7(weight, bias)
    assert torch.equal(model.region.feature[0].weight, weight)
    assert torch.equal(model.region.feature[0].bias, bias)
    with pytest.raises(VLPError, match=r"fc7 weight \(8, 6\)"):
        model.region.init_from_fc7(torch.randn(8, D), torch.randn(8))
