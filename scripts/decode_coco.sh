#!/usr/bin/env bash
# COCO caption decoding and scoring: beam 1 on val, beam 5 on test (VLP's README), one
# process. CKPT may be a glob (quote it): every matching checkpoint is decoded.
#   SPLIT=test CKPT='/ckpt/coco_ce/model.*' scripts/decode_coco.sh
source "$(dirname "$0")/launch.sh"
: "${DATA_ROOT:?set DATA_ROOT}" "${CKPT:?set CKPT to a checkpoint (or a quoted glob)}"
: "${SPLIT:=test}"
BEAM=5
[ "$SPLIT" = val ] && BEAM=1
run vlp decode --model_recover_path "$CKPT" --new_segment_ids --batch_size 100 \
    --beam_size "$BEAM" --enable_butd --image_root "$DATA_ROOT/COCO/region_feat_gvd_wo_bgd" \
    --split "$SPLIT" --src_file "$DATA_ROOT/COCO/annotations/dataset_coco.json" \
    --file_valid_jpgs "$DATA_ROOT/COCO/annotations/coco_valid_jpgs.json" "$@"
