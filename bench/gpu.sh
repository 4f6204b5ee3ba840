#!/usr/bin/env bash
# GPU check: every CUDA path of vlp at tiny scale on ToyWorld, then the GPU benchmarks,
# and one summary table (step, status, seconds, key figure). Sized for under 8 minutes
# on one H100; nothing is installed and nothing is downloaded.
#
#   bash bench/gpu.sh [--dry-run] [--only STEP,STEP...] [--cpu]
#
#   --dry-run  print every command, fully expanded, one per line and in order (each after a
#              "# STEP" line), and run none: it only looks for python, the GPUs torch sees
#              and java
#   --only     run only the steps named (the inputs they need come from an earlier run in
#              the same OUT)
#   --cpu      the same commands on the CPU, to check the script itself on a machine without
#              a GPU (fp16 trains in float32 there; limits are ten times the GPU's; the
#              figures mean nothing)
#
# Environment: PYTHON (default .venv/bin/python where it exists, else python3); OUT (the
# work directory, default runs/gpu); NGPU (processes for the DDP and FSDP steps, default
# every GPU torch sees); IMAGES (ToyWorld images, default 300); BUDGET (seconds for the
# whole run, default 480 with a GPU: each step gets its own limit or what is left).
#
# Writes OUT/toyworld, one directory per step, OUT/logs/NN-STEP.log (the command, then its
# output), OUT/summary.tsv and OUT/summary.md. A failing step is recorded with its log's
# tail and the run goes on; steps that need its output are skipped. Exit status 1 if any
# step failed or was skipped, 2 for bad arguments or no visible GPU.

set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

DRY=0 CPU=0 ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --cpu) CPU=1 ;;
        --only) ONLY=${2:-}; shift ;;
        --only=*) ONLY=${1#--only=} ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
else
    PY=python3
fi
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "bench/gpu.sh: no python at $PY (set PYTHON)" >&2
    exit 2
fi

OUT=${OUT:-runs/gpu}
IMAGES=${IMAGES:-300}
TW=$OUT/toyworld
ANN=$TW/annotations
REGIONS=$OUT/regions.lmdb
BERT=$OUT/bert
LOGS=$OUT/logs

NOTE=""
if [ "$CPU" = 1 ]; then
    DEVICE=cpu
    NGPU=${NGPU:-1}
    BUDGET=${BUDGET:-7200}
    SLOWER=10  # each step's limit is ten times its GPU limit
else
    DEVICE=cuda
    BUDGET=${BUDGET:-480}
    SLOWER=1
    if [ -z "${NGPU:-}" ]; then
        NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null) || NGPU=0
    fi
    if ! [ "$NGPU" -ge 1 ] 2>/dev/null; then
        if [ "$DRY" = 0 ]; then
            echo "bench/gpu.sh: torch ($PY) sees no CUDA device, or does not import;" \
                "--cpu checks the script without one" >&2
            exit 2
        fi
        NGPU=1
        NOTE=" (no GPU visible here: 1 assumed)"
    fi
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# A GPU machine without network may lack the toolkit's smaller dependencies (lmdb,
# pycocotools): wheels that bench/gpu_wheels.sh saved in .whl/ are installed beside the
# run, never over the machine's own packages.
if ! "$PY" -c 'import lmdb, pycocotools' >/dev/null 2>&1 && compgen -G ".whl/*.whl" >/dev/null; then
    if [ "$DRY" = 1 ]; then
        echo "# would install .whl/*.whl into $OUT/site (lmdb or pycocotools missing)"
    else
        mkdir -p "$OUT/site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site" .whl/*.whl \
            || echo "bench/gpu.sh: installing .whl/*.whl failed" >&2
    fi
    export PYTHONPATH="$PYTHONPATH:$ROOT/$OUT/site"
fi

# Java runs coco-caption's PTB tokenizer and METEOR; without it decoding scores in Python,
# and without pycocoevalcap (a 100 MB wheel) decoding is not scored at all.
SCORE=()
command -v java >/dev/null 2>&1 || SCORE=(--no_java)
"$PY" -c 'import pycocoevalcap' >/dev/null 2>&1 || SCORE=(--no_eval)
# Unbuffered, so that the log of a step stopped at its limit shows how far it got.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# -- what every training step shares -------------------------------------------------------
# One epoch of ToyWorld's train + restval captions (IMAGES x 0.8 x 5 / 32: 38 steps at 300
# images), so every run ends with OUT/<run>/model.1.
CAPTIONS=(--src_file "$ANN/dataset_toy.json" --split train restval --features "$REGIONS"
    --do_train --do_lower_case --new_segment_ids --always_truncate_tail --len_vis_input 12
    --max_len_b 20 --train_batch_size 32 --num_train_epochs 1 --num_workers 2 --log_steps 5
    --no_progress)
PRETRAIN=(--bert_model "$BERT" --from_scratch "${CAPTIONS[@]}" --s2s_prob 0.75 --bi_prob 0.25
    --learning_rate 1e-4)
# torchrun, from the same python (the console script may not be on PATH).
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU")
DECODE=(--src_file "$ANN/dataset_toy.json" --features "$REGIONS" --split test --beam_size 3
    --len_vis_input 12 --max_tgt_length 20 --batch_size 64 --num_workers 2 --no_progress
    ${SCORE[@]+"${SCORE[@]}"})
VQA_FILES=(--image_map "$ANN/dataset_toy.json" --features "$REGIONS" --len_vis_input 12)
if [ "$DEVICE" = cuda ]; then
    BENCH_TRAIN=(--batch 64 --seconds 4)
    BENCH_DECODE=()
    BENCH_EXTRACT=(--size 640 --backbone resnet50)
else
    BENCH_TRAIN=(--batch 4 --seconds 1 --rounds 1)
    BENCH_DECODE=(--images 2 --length 8)
    BENCH_EXTRACT=(--images 16 --rounds 1)
fi

# -- running a step ------------------------------------------------------------------------
declare -A RESULT=()
ROWS=()
SEP=$'\x1f'  # between a row's fields: not whitespace, so an empty figure keeps its place
INDEX=0
COUNT=0
FAILED=0
START=$SECONDS

now() { date +%s.%N; }

selected() {
    [ -z "$ONLY" ] && return 0
    case ",$ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}

# step NAME LIMIT_S NEEDS FIGURE OUTPUT -- COMMAND...
#   NEEDS   steps (comma-separated, or -) whose outputs this one reads
#   FIGURE  how bench/gpu_check.py reads the key figure (its `figure` kinds), or -
#   OUTPUT  what the step writes (removed first, so a rerun starts afresh; figures read
#           it), or -
step() {
    local name=$1 limit=$(($2 * SLOWER)) needs=$3 kind=$4 output=$5
    shift 6
    INDEX=$((INDEX + 1))  # a step's place in the full list names its log, --only or not
    selected "$name" || return 0
    COUNT=$((COUNT + 1))
    if [ "$DRY" = 1 ]; then
        printf '# %s (limit %s s)\n' "$name" "$limit"
        printf '%q ' "$@" | sed 's/ $//'
        echo
        return 0
    fi
    local log status figure dep deps left t0 rc
    log=$(printf '%s/%02d-%s.log' "$LOGS" "$INDEX" "$name")
    status=ok figure="" rc=0
    IFS=, read -ra deps <<<"$needs"
    for dep in "${deps[@]}"; do
        # A step that did not run in this invocation (--only) left its output before.
        if [ "$dep" != - ] && [ -n "${RESULT[$dep]:-}" ] && [ "${RESULT[$dep]}" != ok ]; then
            status=SKIP figure="needs $dep"
        fi
    done
    left=$((BUDGET - (SECONDS - START)))
    if [ "$status" = ok ] && [ "$left" -lt 10 ]; then
        status=SKIP figure="the ${BUDGET} s budget is spent"
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    t0=$(now)
    if [ "$status" = ok ]; then
        [ "$output" != - ] && rm -rf -- "$output"
        { printf '$ '; printf '%q ' "$@"; printf '\n\n'; } >"$log"
        timeout -k 10 "$limit" "$@" >>"$log" 2>&1 </dev/null
        rc=$?
        if [ "$rc" = 0 ]; then
            [ "$kind" != - ] && figure=$("$PY" bench/gpu_check.py figure "$kind" "$log" "$output")
        elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            status=FAIL figure="stopped at its ${limit} s limit"
        else
            status=FAIL figure="exit status $rc"
        fi
    fi
    local seconds
    seconds=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    RESULT[$name]=$status
    [ "$status" = ok ] || FAILED=$((FAILED + 1))
    ROWS+=("$name$SEP$status$SEP$seconds$SEP$figure$SEP$log")
    printf '%-14s %-4s %7ss  %s\n' "$name" "$status" "$seconds" "$figure"
}

if [ "$DRY" = 1 ]; then
    echo "# bench/gpu.sh --dry-run: python $PY, device $DEVICE," \
        "$NGPU process(es) for DDP/FSDP$NOTE, out $OUT, budget $BUDGET s," \
        "scoring ${SCORE[*]:-with java}"
    echo "# environment: PYTHONPATH=$PYTHONPATH HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1" \
        "TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1"
else
    [ -z "$ONLY" ] && rm -rf -- "$LOGS"
    mkdir -p "$LOGS"
    echo "bench/gpu.sh: python $PY, device $DEVICE, $NGPU process(es) for DDP/FSDP, out $OUT," \
        "budget $BUDGET s"
fi

# -- the steps -----------------------------------------------------------------------------
# 1. environment
if [ "$DEVICE" = cuda ]; then
    step nvidia-smi 30 - nvidia-smi - -- nvidia-smi
    step cuda-env 60 - env - -- "$PY" bench/gpu_check.py env
else
    step cuda-env 60 - env - -- "$PY" bench/gpu_check.py env --cpu
fi

# 2. ToyWorld, a detector trained on it a few dozen steps, regions extracted with --amp
step toyworld 120 - toyworld - -- "$PY" -m vlp toyworld --out "$TW" --images "$IMAGES" \
    --pretrain-images 0 --overwrite --quiet
step tiny-bert 60 toyworld last "$BERT" -- "$PY" bench/gpu_check.py tiny-bert \
    --toyworld "$TW" --out "$BERT"
step detector 180 toyworld detector "$OUT/detector" -- "$PY" -m vlp train-detector \
    --coco "$ANN/instances_train.json" --images "$TW/images" --out "$OUT/detector" \
    --val-coco "$ANN/instances_val.json" --backbone resnet18 --representation-size 128 \
    --fpn-channels 64 --min-size 128 --max-size 128 --max-steps 40 --batch-size 16 \
    --lr 2e-3 --warmup-steps 10 --save-every 20 --workers 2 --device "$DEVICE" --amp --quiet
step extract 120 detector extract "$REGIONS" -- "$PY" -m vlp extract --images "$TW/images" \
    --detector "$OUT/detector" --out "$REGIONS" --min-boxes 4 --max-boxes 12 \
    --batch-size 32 --workers 2 --device "$DEVICE" --amp --quiet

# 3. caption training in float16 (GradScaler, VLP's FusedAdam path) and in bfloat16
step train-fp16 180 extract,tiny-bert train "$OUT/train_fp16" -- "$PY" -m vlp train \
    --output_dir "$OUT/train_fp16" "${PRETRAIN[@]}" --fp16 --vis_mask_prob 0.2
step train-bf16 180 extract,tiny-bert train "$OUT/train_bf16" -- "$PY" -m vlp train \
    --output_dir "$OUT/train_bf16" "${PRETRAIN[@]}" --bf16 --optimizer adamw

# 4. DDP on every GPU through torchrun (on one GPU a single process: the launch, without a
#    process group)
step ddp 180 extract,tiny-bert train "$OUT/ddp" -- "${TORCHRUN[@]}" -m vlp.run_img2txt_dist \
    --output_dir "$OUT/ddp" "${PRETRAIN[@]}" --bf16

# 5. FSDP: 10 steps on 64 images with torch.distributed.checkpoint checkpoints, gathered
#    into a plain checkpoint, then decoded
step fsdp 180 extract,tiny-bert train "$OUT/fsdp" -- "${TORCHRUN[@]}" -m vlp.run_img2txt_dist \
    --output_dir "$OUT/fsdp" "${PRETRAIN[@]}" --bf16 --fsdp --use_num_imgs 64 --save_steps 4
step fsdp-convert 120 fsdp convert "$OUT/fsdp_gathered" -- "$PY" -m vlp convert-checkpoint \
    --from dcp "$OUT/fsdp/model.1" --out "$OUT/fsdp_gathered"
step fsdp-decode 180 fsdp-convert decode "$OUT/decode_fsdp" -- "$PY" -m vlp decode \
    --model_recover_path "$OUT/fsdp_gathered" --bert_model "$BERT" --do_lower_case \
    "${DECODE[@]}" --fp16 --output_dir "$OUT/decode_fsdp"

# 6. beam search on the GPU, coco-caption scores, what the image is worth to the captioner
step decode 180 train-bf16 decode "$OUT/decode" -- "$PY" -m vlp decode \
    --model_recover_path "$OUT/train_bf16/model.1" "${DECODE[@]}" --grounding \
    --output_dir "$OUT/decode"

# 6b. SCST on every GPU (DDP): captions sampled in train mode with the K/V cache, drawn
#     among the training captions' words (--output_vocab train), then six policy steps
step scst 180 train-bf16 train "$OUT/scst" -- "${TORCHRUN[@]}" -m vlp.run_img2txt_dist \
    --output_dir "$OUT/scst" --model_recover_path "$OUT/train_bf16/model.1" "${CAPTIONS[@]}" \
    --scst --scst_reward standard --mask_prob 0 --max_pred 0 --learning_rate 5e-6 \
    --output_vocab train --max_steps 6 --bf16

# 7. VQA: one epoch of finetuning from the caption run, then the official accuracy on test
step vqa-train 180 train-bf16 train "$OUT/vqa" -- "$PY" -m vlp train --tasks vqa2 \
    --output_dir "$OUT/vqa" --model_recover_path "$OUT/train_bf16/model.1" \
    --src_file "$ANN/vqa/v2_OpenEnded_toy_train_questions.json" \
    --vqa_annotations "$ANN/vqa/v2_toy_train_annotations.json" "${VQA_FILES[@]}" \
    --do_train --do_lower_case --new_segment_ids --s2s_prob 0 --bi_prob 1 --max_pred 0 \
    --drop_prob 0 --max_len_b 20 --learning_rate 1e-4 --head_learning_rate 1e-3 \
    --train_batch_size 32 --num_train_epochs 1 --num_workers 2 --log_steps 5 --no_progress \
    --bf16
step eval-vqa 120 vqa-train vqa "$OUT/eval_vqa" -- "$PY" -m vlp eval-vqa \
    --model_recover_path "$OUT/vqa/model.1" \
    --src_file "$ANN/vqa/v2_OpenEnded_toy_test_questions.json" \
    --vqa_annotations "$ANN/vqa/v2_toy_test_annotations.json" "${VQA_FILES[@]}" \
    --split test --batch_size 64 --num_workers 2 --no_progress --output_dir "$OUT/eval_vqa"

# 8. localization and all three tasks in one DDP run on every GPU (one task a step on every
#    rank: the heads a step leaves unused must not stall NCCL), then Acc@0.5 from its
#    checkpoint
step multitask 180 extract,tiny-bert train "$OUT/multitask" -- "${TORCHRUN[@]}" \
    -m vlp.run_img2txt_dist --output_dir "$OUT/multitask" --bert_model "$BERT" --from_scratch \
    --tasks img2txt,vqa2,refcoco --src_file "img2txt:$ANN/dataset_toy.json" \
    "vqa2:$ANN/vqa/v2_OpenEnded_toy_train_questions.json" "refcoco:$ANN/refcoco_toy/refs(unc).p" \
    --vqa_annotations "$ANN/vqa/v2_toy_train_annotations.json" "${VQA_FILES[@]}" \
    --do_train --do_lower_case --new_segment_ids --s2s_prob 1 --bi_prob 0 --max_len_b 20 \
    --learning_rate 1e-4 --head_learning_rate 1e-3 --train_batch_size 32 --num_train_epochs 1 \
    --num_workers 2 --log_steps 5 --no_progress --bf16
step eval-grounding 120 multitask grounding "$OUT/eval_grounding" -- "$PY" -m vlp eval-grounding \
    --model_recover_path "$OUT/multitask/model.1" --src_file "$ANN/refcoco_toy/refs(unc).p" \
    --split val --features "$REGIONS" --len_vis_input 12 --do_lower_case --batch_size 64 \
    --num_workers 2 --no_progress --output_dir "$OUT/eval_grounding"

# 9. the benchmarks
step bench-train 180 - bench-train - -- "$PY" bench/train_step.py --device "$DEVICE" --bf16 \
    "${BENCH_TRAIN[@]}"
step bench-decode 120 - bench-decode - -- "$PY" bench/decode.py --device "$DEVICE" \
    ${BENCH_DECODE[@]+"${BENCH_DECODE[@]}"}
step bench-extract 150 - bench-extract - -- "$PY" bench/extract.py --device "$DEVICE" \
    "${BENCH_EXTRACT[@]}"

# -- the summary ---------------------------------------------------------------------------
if [ "$COUNT" = 0 ]; then
    echo "bench/gpu.sh: --only $ONLY names no step" >&2
    exit 2
fi
[ "$DRY" = 1 ] && exit 0

TSV=$OUT/summary.tsv
MD=$OUT/summary.md
total=$((SECONDS - START))
printf 'step\tstatus\tseconds\tkey figure\n' >"$TSV"
{
    echo "# GPU check"
    echo
    echo "$DEVICE, $NGPU process(es) for DDP/FSDP, $total s in all."
    echo
    echo "| step | status | seconds | key figure |"
    echo "| --- | --- | --- | --- |"
} >"$MD"
echo
printf '%-14s %-6s %8s  %s\n' step status seconds "key figure"
printf '%s\n' "--------------------------------------------------------------------------"
for row in "${ROWS[@]}"; do
    IFS=$SEP read -r name status seconds figure _ <<<"$row"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$figure" >>"$TSV"
    printf '| %s | %s | %s | %s |\n' "$name" "$status" "$seconds" "${figure//|/\\|}" >>"$MD"
    printf '%-14s %-6s %8s  %s\n' "$name" "$status" "$seconds" "$figure"
done
printf '%s\n' "--------------------------------------------------------------------------"
printf '%-14s %-6s %8s  %s\n' total "$((COUNT - FAILED))/$COUNT" "$total" "$OUT/summary.md"

for row in "${ROWS[@]}"; do
    IFS=$SEP read -r name status _ _ log <<<"$row"
    [ "$status" = FAIL ] || continue
    echo
    echo "== $name FAILED; last lines of $log:"
    tail -n 20 "$log"
    { echo; echo "## $name: last lines of \`$log\`"; echo; echo '```';
      tail -n 20 "$log"; echo '```'; } >>"$MD"
done

[ "$FAILED" = 0 ]
