"""Foreign weights into UnifiedVLP, through one explicit name mapping each.

Hugging Face BERT (BertModel, BertForPreTraining, BertForMaskedLM; `bert.` prefix or not):
  embeddings.* and encoder.layer.N.*           -> same names (our layout is BERT's)
  cls.predictions.transform.{dense,LayerNorm}  -> mlm_head.{dense,LayerNorm}
  cls.predictions.bias                         -> mlm_head.bias
  pooler.*, cls.seq_relationship.*, embeddings.position_ids, cls.predictions.decoder.*
                                               -> not used (decoder is tied to the words)
VLP's model.N.bin (BertForPreTrainingLossMask, maybe saved with a `module.` prefix):
  bert.embeddings.*, bert.encoder.layer.N.*    -> embeddings.*, encoder.layer.N.*
  cls.predictions.*                            -> mlm_head.* as above
  vis_embed.{0,2}.*                            -> region.feature.{0,2}.*
  vis_pe_embed.0.*                             -> region.location.0.*
  ans_classifier.{0,2}.*                       -> vqa_head.{0,2}.*
  bert.pooler.*                                -> not used
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from vlp.errors import VLPError
from vlp.model.checkpoint import LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, load_into, read_state_dict
from vlp.model.config import VLPConfig

_HF_UNUSED = re.compile(r"^(pooler\.|cls\.seq_relationship\.|embeddings\.position_ids$"
                        r"|cls\.predictions\.decoder\.)")
_VLP_RENAMES = (
    (re.compile(r"^bert\.(embeddings|encoder)\."), r"\1."),
    (re.compile(r"^cls\.predictions\.transform\."), "mlm_head."),
    (re.compile(r"^cls\.predictions\.bias$"), "mlm_head.bias"),
    (re.compile(r"^vis_embed\.([02])\."), r"region.feature.\1."),
    (re.compile(r"^vis_pe_embed\.0\."), "region.location.0."),
    (re.compile(r"^ans_classifier\.([02])\."), r"vqa_head.\1."),
)
_VLP_UNUSED = re.compile(r"^(bert\.pooler\.|cls\.predictions\.decoder\.weight$"
                         r"|bert\.embeddings\.position_ids$)")
_TYPES = "embeddings.token_type_embeddings.weight"
_POSITIONS = "embeddings.position_embeddings.weight"


def _legacy_names(state: dict) -> dict:
    """TF-era checkpoints call LayerNorm's parameters gamma/beta; VLP renamed them too."""
    fixed = {}
    for key, value in state.items():
        key = re.sub(r"\.gamma$", ".weight", key)
        fixed[re.sub(r"\.beta$", ".bias", key)] = value
    return fixed


def map_hf_bert(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Our names for a Hugging Face BERT state dict; unknown keys are an error."""
    mapped, unknown = {}, []
    for key, value in _legacy_names(state).items():
        key = key[len("bert."):] if key.startswith("bert.") else key
        if _HF_UNUSED.match(key):
            continue
        if key.startswith(("embeddings.", "encoder.layer.")):
            mapped[key] = value
        elif key.startswith("cls.predictions.transform."):
            mapped["mlm_head." + key[len("cls.predictions.transform."):]] = value
        elif key == "cls.predictions.bias":
            mapped["mlm_head.bias"] = value
        else:
            unknown.append(key)
    if unknown:
        raise VLPError(f"{source}: keys that are not BERT's: {', '.join(sorted(unknown)[:6])}")
    return mapped


def map_vlp_bin(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Our names for a VLP model.N.bin state dict; unknown keys are an error."""
    state = _legacy_names({k.removeprefix("module."): v for k, v in state.items()})
    if "vis_embed.0.weight" not in state or "bert.embeddings.word_embeddings.weight" not in state:
        raise VLPError(f"{source}: not a VLP checkpoint (no vis_embed.0.weight / "
                       "bert.embeddings.word_embeddings.weight); for a BERT use --from hf-bert")
    decoder = state.get("cls.predictions.decoder.weight")
    words = state["bert.embeddings.word_embeddings.weight"]
    if decoder is not None and not torch.equal(decoder, words):
        raise VLPError(f"{source}: cls.predictions.decoder.weight differs from the word "
                       "embeddings; only VLP's tied output layer is supported")
    mapped, unknown = {}, []
    for key, value in state.items():
        if _VLP_UNUSED.match(key):
            continue
        for pattern, new in _VLP_RENAMES:
            if pattern.match(key):
                mapped[pattern.sub(new, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise VLPError(f"{source}: keys with no place in the model: {', '.join(sorted(unknown)[:6])}")
    return mapped


def fit_token_types(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """The segment table resized as VLP did: 2 -> 6 rows copies row 0 into rows 2, 3, 4
    (left-to-right, right-to-left, seq2seq image) and row 1 into row 5 (seq2seq text);
    a larger table keeps its first rows."""
    have = weight.shape[0]
    if have >= rows:
        return weight[:rows].clone()
    if have != 2 or rows != 6:
        raise VLPError(f"{_TYPES}: cannot make {rows} segment types from {have}")
    return weight[[0, 1, 0, 0, 0, 1]].clone()


def fit_positions(weight: torch.Tensor, rows: int, source: str) -> torch.Tensor:
    if weight.shape[0] < rows:
        raise VLPError(f"{source}: {_POSITIONS} has {weight.shape[0]} positions, fewer than "
                       f"max_position_embeddings {rows}")
    return weight[:rows].clone()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VLPError(f"{path.parent}: no config.json; not a Hugging Face model directory") from None
    except json.JSONDecodeError as err:
        raise VLPError(f"{path}: not valid JSON ({err})") from None


def hf_bert_config(directory: Path, overrides: dict) -> VLPConfig:
    """A VLPConfig from a BERT config.json (and vocab.txt for the special token ids)."""
    hf = _read_json(directory / "config.json")
    if hf.get("model_type") != "bert":
        raise VLPError(f"{directory}/config.json: model_type is {hf.get('model_type')!r}, "
                       "expected 'bert'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise VLPError(f"{directory}/config.json: position_embedding_type "
                       f"{hf['position_embedding_type']!r} is not supported (only 'absolute')")
    names = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "intermediate_size", "hidden_act", "hidden_dropout_prob", "max_position_embeddings",
             "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range", "pad_token_id")
    values = {n: hf[n] for n in names if n in hf}
    values.update(special_token_ids(directory / "vocab.txt"))
    values.update(overrides)
    try:
        return VLPConfig().replace(**values)
    except TypeError as err:
        raise VLPError(f"model config: {err}") from None


def special_token_ids(vocab: Path) -> dict:
    """pad/cls/sep/mask token ids from a BERT vocab.txt (none if the file is absent)."""
    if not vocab.is_file():
        return {}
    index = {tok: i for i, tok in enumerate(vocab.read_text(encoding="utf-8").splitlines())}
    wanted = {"[PAD]": "pad_token_id", "[CLS]": "cls_token_id", "[SEP]": "sep_token_id",
              "[MASK]": "mask_token_id"}
    return {field: index[tok] for tok, field in wanted.items() if tok in index}


def _weights_file(directory: Path) -> Path:
    for name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME):
        if (directory / name).is_file():
            return directory / name
    raise VLPError(f"{directory}: neither {WEIGHTS_NAME} nor {LEGACY_WEIGHTS_NAME}")


def _fit_tables(state: dict, config: VLPConfig, source: str) -> dict:
    if _TYPES in state:
        state[_TYPES] = fit_token_types(state[_TYPES], config.type_vocab_size)
    if _POSITIONS in state:
        state[_POSITIONS] = fit_positions(state[_POSITIONS], config.max_position_embeddings, source)
    return state


def from_hf_bert(cls, path, **overrides):
    """UnifiedVLP with BERT's text weights; regions, VQA head (and an MLM head the BERT
    directory lacks) start from the usual random init."""
    directory = Path(path)
    if not directory.is_dir():
        raise VLPError(f"{directory}: not a directory (expected a Hugging Face BERT directory)")
    config = hf_bert_config(directory, overrides)
    weights = _weights_file(directory)
    state = _fit_tables(map_hf_bert(read_state_dict(weights), str(weights)), config, str(weights))
    model = cls(config)
    load_into(model, state, str(weights), required=("embeddings.", "encoder."))
    return model


def vlp_bin_config(state: dict[str, torch.Tensor], overrides: dict) -> VLPConfig:
    """Sizes read off a mapped VLP state dict; attention heads are not stored, so they
    default to hidden/64 (BERT's) unless given."""
    hidden = state["embeddings.word_embeddings.weight"].shape[1]
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")}
    feature = state["region.feature.0.weight"]
    values = dict(
        vocab_size=state["embeddings.word_embeddings.weight"].shape[0], hidden_size=hidden,
        num_hidden_layers=len(layers), num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state[_POSITIONS].shape[0],
        type_vocab_size=6 if state[_TYPES].shape[0] >= 6 else 2,
        region_feature_dim=feature.shape[1], region_hidden_size=feature.shape[0],
        region_classes=state["region.location.0.weight"].shape[1] - 6,
        vqa_answers=state["vqa_head.2.weight"].shape[0] if "vqa_head.2.weight" in state else 0,
        # VLP's BertLayerNorm used 1e-5 everywhere.
        layer_norm_eps=1e-5)
    values.update(overrides)
    return VLPConfig().replace(**values)


def from_vlp_bin(cls, path, **overrides):
    """UnifiedVLP from VLP's model.N.bin; every weight of the model must be there."""
    path = Path(path)
    state = map_vlp_bin(read_state_dict(path), str(path))
    if "region.location.0.weight" not in state or "encoder.layer.0.intermediate.dense.weight" not in state:
        raise VLPError(f"{path}: missing vis_pe_embed.0.weight or bert.encoder.layer.0.*; "
                       "only VLP's region-feature (--enable_butd) checkpoints are supported")
    dense = state.get("mlm_head.dense.weight")
    hidden = state["embeddings.word_embeddings.weight"].shape[1]
    if dense is not None and dense.shape[0] != hidden:
        raise VLPError(f"{path}: cls.predictions.transform.dense.weight is {tuple(dense.shape)}; "
                       "checkpoints trained with --relax_projection are not supported")
    config = vlp_bin_config(state, overrides)
    state = _fit_tables(state, config, str(path))
    model = cls(config)
    load_into(model, state, str(path))
    return model
