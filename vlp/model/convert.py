"""Foreign weights into UnifiedVLP, through one explicit name mapping each.

Hugging Face BERT (BertModel, BertForPreTraining, BertForMaskedLM; `bert.` prefix or not):
  embeddings.* and encoder.layer.N.*           -> same names (our layout is BERT's)
  cls.predictions.transform.{dense,LayerNorm}  -> mlm_head.{dense,LayerNorm}
  cls.predictions.bias                         -> mlm_head.bias
  pooler.dense.*                               -> pooler.dense.* (a model with a pooler)
  cls.seq_relationship.*, embeddings.position_ids, cls.predictions.decoder.*
                                               -> not used (decoder is tied to the words)
VLP's model.N.bin (BertForPreTrainingLossMask, maybe saved with a `module.` prefix):
  bert.embeddings.*, bert.encoder.layer.N.*    -> embeddings.*, encoder.layer.N.*
  cls.predictions.*                            -> mlm_head.* as above (--relax_projection:
                                                  the transform's P projections, stacked)
  vis_embed.{0,2}.*                            -> region.feature.{0,2}.*
  vis_pe_embed.0.*                             -> region.location.0.*
  ans_classifier.{0,2}.*                       -> vqa_head.{0,2}.*
  bert.pooler.*                                -> pooler.* (VLP's masked-region loss,
                                                  --vis_mask_prob, reads it)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from vlp.errors import VLPError
from vlp.model.checkpoint import LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, load_into, read_state_dict
from vlp.model.config import VLPConfig

_HF_UNUSED = re.compile(r"^(cls\.seq_relationship\.|embeddings\.position_ids$"
                        r"|cls\.predictions\.decoder\.)")
_VLP_RENAMES = (
    (re.compile(r"^bert\.(embeddings|encoder)\."), r"\1."),
    (re.compile(r"^cls\.predictions\.transform\."), "mlm_head."),
    (re.compile(r"^cls\.predictions\.bias$"), "mlm_head.bias"),
    (re.compile(r"^vis_embed\.([02])\."), r"region.feature.\1."),
    (re.compile(r"^vis_pe_embed\.0\."), "region.location.0."),
    (re.compile(r"^ans_classifier\.([02])\."), r"vqa_head.\1."),
    (re.compile(r"^bert\.pooler\.dense\."), "pooler.dense."),
)
_VLP_UNUSED = re.compile(r"^(cls\.predictions\.decoder\.weight$|bert\.embeddings\.position_ids$)")
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
        if key.startswith(("embeddings.", "encoder.layer.", "pooler.dense.")):
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


def fit_positions(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """The position table resized as VLP did: cut to its first `rows`, or grown by
    repeating the table (row i takes row i mod the old size)."""
    have = weight.shape[0]
    return weight[torch.arange(rows) % have].clone()


def read_config_file(path: Path) -> dict:
    """VLP's --config_path: a BERT config JSON."""
    if not path.is_file():
        raise VLPError(f"--config_path {path}: no such file")
    return _read_json(path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise VLPError(f"{path.parent}: no config.json; not a Hugging Face model directory") from None
    except json.JSONDecodeError as err:
        raise VLPError(f"{path}: not valid JSON ({err})") from None


def hf_bert_config(directory: Path, overrides: dict, config_file: Path | None = None) -> VLPConfig:
    """A VLPConfig from a BERT config.json (and vocab.txt for the special token ids).
    `config_file` (VLP's --config_path) is read instead of the directory's config.json: a
    Hugging Face config.json or the original bert_config.json, which names no model_type."""
    source = Path(config_file) if config_file is not None else directory / "config.json"
    hf = read_config_file(source) if config_file is not None else _read_json(source)
    if hf.get("model_type", "bert" if config_file is not None else None) != "bert":
        raise VLPError(f"{source}: model_type is {hf.get('model_type')!r}, expected 'bert'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise VLPError(f"{source}: position_embedding_type "
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


# The config fields a --config_path sets that a checkpoint's weights also fix.
_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
          "intermediate_size", "hidden_act")


def check_config_file(config: VLPConfig, config_file: Path, source) -> None:
    """A checkpoint's sizes are in its weights: a --config_path must agree with them."""
    wanted = read_config_file(Path(config_file))
    differ = [f"{name} {wanted[name]} (the model has {getattr(config, name)})"
              for name in _SIZES if name in wanted and wanted[name] != getattr(config, name)]
    if differ:
        raise VLPError(f"--config_path {config_file} does not describe {source}: "
                       f"{'; '.join(differ)}")


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
        state[_POSITIONS] = fit_positions(state[_POSITIONS], config.max_position_embeddings)
    if not config.pooler:
        state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    return state


def from_hf_bert(cls, path, config_file: Path | None = None, **overrides):
    """UnifiedVLP with BERT's text weights; regions, VQA head (and an MLM head the BERT
    directory lacks) start from the usual random init. `config_file`: see hf_bert_config."""
    directory = Path(path)
    if not directory.is_dir():
        raise VLPError(f"{directory}: not a directory (expected a Hugging Face BERT directory)")
    config = hf_bert_config(directory, overrides, config_file)
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
        relax_projection=relax_projections(state, hidden),
        pooler="pooler.dense.weight" in state,
        # VLP's BertLayerNorm used 1e-5 everywhere.
        layer_norm_eps=1e-5)
    values.update(overrides)
    return VLPConfig().replace(**values)


def relax_projections(state: dict[str, torch.Tensor], hidden: int) -> int:
    """How many projections a mapped masked-LM head has (VLP's --relax_projection: 4);
    0 for BERT's one."""
    dense = state.get("mlm_head.dense.weight")
    if dense is None or dense.shape[0] == hidden:
        return 0
    if dense.shape[0] % hidden:
        raise VLPError(f"cls.predictions.transform.dense.weight is {tuple(dense.shape)}: not a "
                       f"whole number of {hidden}-wide projections")
    return dense.shape[0] // hidden


_RELAXED = ("mlm_head.dense.weight", "mlm_head.dense.bias", "mlm_head.LayerNorm.weight",
            "mlm_head.LayerNorm.bias")


def fit_relax_projection(model, projections: int, task_idx: int):
    """`model` with a masked-LM head of `projections` projections (0 or 1: one), as VLP
    loaded weights into a model of another --relax_projection: one projection is repeated
    into each of P, or P are cut to projection `task_idx` (VLP's task index of the run:
    3 captioning, 0 VQA). Other weights are kept as they are."""
    have, want = max(model.config.relax_projection, 1), max(projections, 1)
    if have == want:
        return model
    if have > 1 and want > 1:
        raise VLPError(f"the model's masked-LM head has {have} projections; cannot make {want}")
    state = model.state_dict()
    for key in _RELAXED:
        blocks = state[key].unflatten(0, (have, -1))
        if have == 1:
            state[key] = blocks.expand(want, *blocks.shape[1:]).flatten(0, 1).clone()
        else:
            state[key] = blocks[task_idx].clone()
    fitted = type(model)(model.config.replace(relax_projection=projections))
    fitted.load_state_dict(state)
    return fitted.to(next(model.parameters()).device)


def from_vlp_bin(cls, path, **overrides):
    """UnifiedVLP from VLP's model.N.bin; every weight of the model must be there."""
    path = Path(path)
    return from_vlp_state(cls, read_state_dict(path), str(path), **overrides)


def from_vlp_state(cls, state: dict, path: str, **overrides):
    """UnifiedVLP from the tensors of VLP's model.N.bin (`path` names them in errors)."""
    state = map_vlp_bin(state, str(path))
    if "region.location.0.weight" not in state or "encoder.layer.0.intermediate.dense.weight" not in state:
        raise VLPError(f"{path}: missing vis_pe_embed.0.weight or bert.encoder.layer.0.*; "
                       "only VLP's region-feature (--enable_butd) checkpoints are supported")
    config = vlp_bin_config(state, overrides)
    state = _fit_tables(state, config, str(path))
    model = cls(config)
    load_into(model, state, str(path))
    return model


def bert_dir_settings(directory: Path | None, config_file: Path | None = None) -> dict:
    """What a VLP .bin does not store and VLP took from `--bert_model`'s directory (its
    config.json, or VLP's --config_path `config_file`): the attention heads, the
    activation and the special token ids."""
    if directory is None:
        # No vocabulary to read the token ids from: the config's own settings only.
        values = read_config_file(Path(config_file)) if config_file is not None else {}
        return {k: values[k] for k in ("num_attention_heads", "hidden_act") if k in values}
    config = hf_bert_config(Path(directory), {}, config_file)
    return {name: getattr(config, name) for name in
            ("num_attention_heads", "hidden_act", "pad_token_id", "cls_token_id",
             "sep_token_id", "mask_token_id")}


def from_bert_state(cls, state: dict, path: str, bert_dir: Path,
                    config_file: Path | None = None, **overrides):
    """UnifiedVLP whose text side comes from BERT-layout tensors (UniLM's
    model_153999_cpu.bin: `bert.*`, `cls.*`) sized by `bert_dir`'s config.json (or
    `config_file`); the parts such a file lacks (regions, VQA head) start from the usual
    random initialisation."""
    config = hf_bert_config(bert_dir, overrides, config_file)
    state = _fit_tables(map_hf_bert(state, path), config, path)
    hidden = state.get("embeddings.word_embeddings.weight")
    if hidden is not None and tuple(hidden.shape) != (config.vocab_size, config.hidden_size):
        raise VLPError(f"{path}: word embeddings {tuple(hidden.shape)} do not fit "
                       f"{bert_dir}/config.json (vocab {config.vocab_size}, hidden "
                       f"{config.hidden_size}); pass the --bert_model it was trained from")
    model = cls(config)
    load_into(model, state, path, required=("embeddings.", "encoder."))
    return model
