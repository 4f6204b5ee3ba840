#!/usr/bin/env bash
# VQA 2.0: 2 GPUs x batch 256 (4 accumulation steps of 64; 512 in all), lr 2e-5, 20 epochs,
# bidirectional only, one masked question token (VLP's --mask_prob 0 --max_pred 1), from
# the CC checkpoint (CC_CKPT, default its epoch 30), on Pythia's imdb files (IMDB_ROOT).
# TRAINVAL=1 trains on train2014 + val2014, as VLP did for the leaderboard.
source "$(dirname "$0")/launch.sh"
: "${DATA_ROOT:?set DATA_ROOT}" "${CHECKPOINT_ROOT:?set CHECKPOINT_ROOT}" "${BERT:?set BERT to a BERT directory}"
: "${CC_CKPT:=$CHECKPOINT_ROOT/cc_g8_lr1e-4_batch512_s0.75_b0.25/model.30}"
: "${IMDB_ROOT:=$DATA_ROOT/vqa2/imdb}"
: "${TRAINVAL:=0}"
src=("$IMDB_ROOT/imdb_train2014.npy")
name=vqa2_g2_lr2e-5_batch512_ft_from_s0.75_b0.25
if [ "$TRAINVAL" = 1 ]; then
    src+=("$IMDB_ROOT/imdb_val2014.npy")
    name+=_trainval
fi
train 2 --output_dir "$CHECKPOINT_ROOT/$name" \
    --bert_model "$BERT" --model_recover_path "$CC_CKPT" --do_train --tasks vqa2 \
    --learning_rate 2e-5 --train_batch_size 256 --gradient_accumulation_steps 4 \
    --num_train_epochs 20 --new_segment_ids --always_truncate_tail --amp \
    --s2s_prob 0 --bi_prob 1 --mask_prob 0 --max_pred 1 --src_file "${src[@]}" \
    --file_valid_jpgs "$DATA_ROOT/COCO/annotations/coco_valid_jpgs.json" \
    --image_root "$DATA_ROOT/COCO/region_feat_gvd_wo_bgd" --enable_butd "$@"
