"""Helpers of bench/gpu.sh: the CUDA environment, a tiny BERT directory for ToyWorld,
and each step's key figure for the summary table.

    python bench/gpu_check.py env [--cpu]                 # devices, bf16, NCCL, FSDP2, DCP
    python bench/gpu_check.py tiny-bert --toyworld DIR --out DIR [--hidden 256 --layers 4]
    python bench/gpu_check.py figure KIND LOG [PATH]      # one line for the table, or nothing

The BERT directory holds a config.json and a vocab.txt of ToyWorld's words, nothing else:
`vlp train --from_scratch --bert_model DIR` builds a random model of those sizes, so the
check needs neither downloaded weights nor the optional MiniLM package.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
import sys
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# -- env ---------------------------------------------------------------------------------
def env(args) -> int:
    import torch
    import torch.distributed as dist

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    if not torch.cuda.is_available():
        print("summary: no CUDA device visible to torch")
        return 0 if args.cpu else 1
    count = torch.cuda.device_count()
    names = []
    for i in range(count):
        p = torch.cuda.get_device_properties(i)
        names.append(p.name)
        print(f"cuda:{i} {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
              f"{p.multi_processor_count} SMs")
    bf16 = torch.cuda.is_bf16_supported()
    if bf16:  # a bfloat16 product really runs, not only the flag
        x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        bf16 = bool(torch.isfinite((x @ x).float()).all())
    nccl = dist.is_available() and dist.is_nccl_available()
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
        fsdp2 = True
    except ImportError:
        fsdp2 = False
    try:
        import torch.distributed.checkpoint  # noqa: F401
        dcp = True
    except ImportError:
        dcp = False
    print(f"bf16 {_yes(bf16)}, NCCL {_yes(nccl)}, FSDP2 fully_shard {_yes(fsdp2)}, "
          f"torch.distributed.checkpoint {_yes(dcp)}")
    kinds = ", ".join(sorted(set(names)))
    print(f"summary: {count} x {kinds}, bf16 {_yes(bf16)}, NCCL {_yes(nccl)}, "
          f"torch {torch.__version__}")
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# -- tiny-bert ---------------------------------------------------------------------------
def toyworld_texts(root: Path) -> list[str]:
    """Every caption, alt-text, question and referring expression ToyWorld wrote under
    `root`."""
    ann = root / "annotations"
    texts = []
    for name in ("dataset_toy.json", "dataset_cc_toy.json"):
        if (ann / name).is_file():
            for image in json.loads((ann / name).read_text())["images"]:
                texts += [s["raw"] for s in image["sentences"]]
    for path in sorted((ann / "vqa").glob("*_questions.json")):
        texts += [q["question"] for q in json.loads(path.read_text())["questions"]]
    if (ann / "refcoco_toy" / "refs(unc).p").is_file():
        from vlp.data.refer import read_refer

        refer = read_refer(ann, "refcoco_toy", "unc")
        texts += [s.sent for r in refer.refs() for s in r.sentences]
    if not texts:
        raise SystemExit(f"tiny-bert: no captions or questions under {ann}")
    return texts


def words(texts: list[str]) -> list[str]:
    """Lower-cased words and punctuation marks, split as BERT's basic tokenizer splits."""
    found = set()
    for text in texts:
        found.update(re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()))
    return sorted(found)


def tiny_bert(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + [w for w in words(toyworld_texts(Path(args.toyworld))) if w not in SPECIAL]
    config = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": len(vocab),
              "hidden_size": args.hidden, "num_hidden_layers": args.layers,
              "num_attention_heads": args.heads, "intermediate_size": 4 * args.hidden,
              "hidden_act": "gelu", "max_position_embeddings": 64, "type_vocab_size": 2,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
              "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": 0}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}) + "\n")
    print(f"wrote {out}")
    print(f"{len(vocab)} tokens, {args.layers} layers, hidden {args.hidden}, {args.heads} heads, "
          "no weights (train with --from_scratch)")
    return 0


# -- figure ------------------------------------------------------------------------------
def _lines(log: Path) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _grep(log: Path, pattern: str) -> re.Match | None:
    for line in _lines(log):
        found = re.search(pattern, line)
        if found:
            return found
    return None


def _json(pattern: str) -> dict:
    paths = sorted(glob.glob(pattern))
    return json.loads(Path(paths[-1]).read_text()) if paths else {}


def figure_env(log, _):
    found = _grep(log, r"^summary: (.*)")
    return found.group(1) if found else ""


def figure_nvidia_smi(log, _):
    driver = _grep(log, r"Driver Version: (\S+)")
    cuda = _grep(log, r"CUDA Version: (\S+)")
    return (f"driver {driver.group(1)}" if driver else "") + (f", CUDA {cuda.group(1)}"
                                                               if cuda else "")


def figure_toyworld(log, _):
    found = _grep(log, r"images\s+(\d+) .*?(\d+) captions")
    return f"{found.group(1)} images, {found.group(2)} captions" if found else ""


def figure_detector(log, path):
    m = _json(str(Path(path) / "metrics.json"))
    if not m:
        return ""
    return (f"val mAP@0.5 {m.get('map50', float('nan')):.3f} after {m.get('steps', '?')} "
            f"steps in {m.get('seconds', '?')} s")


def figure_extract(log, _):
    found = _grep(log, r"(\d+) written.*of (\d+) images .*?([\d.]+) images/s")
    return f"{found.group(1)}/{found.group(2)} images, {found.group(3)} images/s" if found else ""


def figure_train(log, path):
    rows = []
    for line in _lines(Path(path) / "log.jsonl"):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if "samples_per_s" in row:
            rows.append(row)
    if not rows:
        return ""
    # The first window holds start-up (CUDA context, loader workers): leave it out.
    rate = statistics.median(r["samples_per_s"] for r in (rows[1:] or rows))
    loss, step = rows[-1].get("loss", float("nan")), rows[-1].get("step", "?")
    return f"{rate:.0f} samples/s, loss {loss:.3f} at step {step}"


def figure_last(log, _):
    lines = [line.strip() for line in _lines(log) if line.strip()]
    return lines[-1][:90] if lines else ""


def figure_convert(log, _):
    found = _grep(log, r"([\d,]+) parameters gathered")
    return f"{found.group(1)} parameters gathered" if found else ""


def figure_decode(log, path):
    metrics = _json(str(Path(path) / "*.metrics.json"))
    grounding = _json(str(Path(path) / "*.grounding.json"))
    parts = [f"{k} {metrics[k]:.3f}" for k in ("CIDEr", "BLEU_4", "METEOR") if k in metrics]
    if "gain" in grounding:
        parts.append(f"image worth {grounding['gain']:.2f} nats/token")
    results = sorted(glob.glob(str(Path(path) / "*.results.json")))
    if results:
        parts.insert(0, f"{len(json.loads(Path(results[-1]).read_text()))} captions")
    return ", ".join(parts)


def figure_vqa(log, path):
    metrics = _json(str(Path(path) / "*.vqa_metrics.json"))
    return f"accuracy {metrics['overall']:.2f}%" if "overall" in metrics else ""


def figure_grounding(log, path):
    metrics = _json(str(Path(path) / "*.grounding_metrics.json"))
    if "accuracy" not in metrics:
        return ""
    return (f"Acc@0.5 {metrics['accuracy']:.2f}% of {metrics['expressions']} expressions "
            f"(regions reach {metrics['upper_bound']:.1f}%)")


_DECODE_ROW = re.compile(r"^\s+(greedy|beam \d+)\s+cache\s+([\d.]+) captions/s"
                         r".*speed-up\s+([\d.]+)x")
_BENCH_ROW = re.compile(r"^(.+?)\s+([\d.]+)/s\s+([\d.]+)/s\s+([\d.]+)x\s+([\d.]+)\s+([\d.]+)")


def figure_bench_train(log, _):
    parts = []
    for line in _lines(log):
        found = _BENCH_ROW.match(line)
        if found:
            name, ours, _bert, ratio, mfu = found.group(1, 2, 3, 4, 5)
            parts.append(f"{name.split()[0]} {float(ours):.0f}/s {ratio}x MFU {mfu}")
    return "; ".join(parts)


def figure_bench_decode(log, _):
    parts = []
    for line in _lines(log):
        found = _DECODE_ROW.search(line)
        if found:
            parts.append(f"{found.group(1)} {float(found.group(2)):.1f} captions/s, "
                         f"cache {found.group(3)}x")
    return "; ".join(parts)


def figure_bench_extract(log, _):
    bare = _grep(log, r"bare detector forward\s+([\d.]+)")
    full = _grep(log, r"full extractor\s+([\d.]+)")
    ratio = _grep(log, r"ratio ([\d.]+) \(target >= ([\d.]+)\)")
    if not ratio:
        return ""
    rates = f" ({full.group(1)} vs {bare.group(1)} images/s)" if bare and full else ""
    return f"ratio {ratio.group(1)}{rates}, target >= {ratio.group(2)}"


FIGURES = {"env": figure_env, "nvidia-smi": figure_nvidia_smi, "toyworld": figure_toyworld,
           "detector": figure_detector, "convert": figure_convert, "extract": figure_extract,
           "train": figure_train, "decode": figure_decode, "vqa": figure_vqa, "last": figure_last,
           "grounding": figure_grounding,
           "bench-train": figure_bench_train, "bench-decode": figure_bench_decode,
           "bench-extract": figure_bench_extract}


def figure(args) -> int:
    """Best effort: a figure that cannot be read is left out, never an error."""
    try:
        text = FIGURES[args.kind](Path(args.log), args.path or ".")
    except Exception as err:  # noqa: BLE001 - the table shows what could be read
        text = f"(no figure: {type(err).__name__})"
    print(" ".join(text.split()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/gpu_check.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env", help="CUDA devices, bf16, NCCL, FSDP2 and DCP")
    e.add_argument("--cpu", action="store_true", help="no CUDA device is not an error")
    e.set_defaults(run=env)
    b = sub.add_parser("tiny-bert", help="a random-weight BERT directory for ToyWorld")
    b.add_argument("--toyworld", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--hidden", type=int, default=256)
    b.add_argument("--layers", type=int, default=4)
    b.add_argument("--heads", type=int, default=4)
    b.set_defaults(run=tiny_bert)
    f = sub.add_parser("figure", help="a step's key figure from its log and outputs")
    f.add_argument("kind", choices=sorted(FIGURES))
    f.add_argument("log")
    f.add_argument("path", nargs="?")
    f.set_defaults(run=figure)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
