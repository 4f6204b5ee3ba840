#!/usr/bin/env bash
# VQA 2.0 evaluation, one process (VLP's README). SPLIT=val2014 (default) answers and
# scores the val questions; SPLIT=test-dev or test-std writes the challenge's results
# file into OUT (default: beside the checkpoint) and checks it before upload.
# CKPT may be a glob (quote it) when scoring val: every matching checkpoint is evaluated.
#   SPLIT=test-dev CKPT=/ckpt/vqa2/model.20 scripts/eval_vqa2.sh
source "$(dirname "$0")/launch.sh"
: "${DATA_ROOT:?set DATA_ROOT}" "${CKPT:?set CKPT to a checkpoint (or a quoted glob)}"
: "${SPLIT:=val2014}"
: "${IMDB_ROOT:=$DATA_ROOT/vqa2/imdb}"
case "$SPLIT" in
    val2014) imdb=imdb_val2014.npy ;;
    test-dev) imdb=imdb_test-dev2015.npy subtype=test-dev2015 ;;
    test-std) imdb=imdb_test2015.npy subtype=test2015 ;;
    *) echo "SPLIT must be val2014, test-dev or test-std, got $SPLIT" >&2; exit 2 ;;
esac
: "${OUT:=$(dirname "$CKPT")}"
run vlp eval-vqa --model_recover_path "$CKPT" --new_segment_ids --enable_butd \
    --image_root "$DATA_ROOT/COCO/region_feat_gvd_wo_bgd" \
    --file_valid_jpgs "$DATA_ROOT/COCO/annotations/coco_valid_jpgs.json" \
    --src_file "$IMDB_ROOT/$imdb" --batch_size 50 --split "$SPLIT" --output_dir "$OUT" "$@"
if [ -n "${subtype:-}" ]; then
    run vlp validate-vqa-submission "$OUT/vqa_OpenEnded_mscoco_${subtype}_vlp_results.json" \
        "$IMDB_ROOT/$imdb"
fi
