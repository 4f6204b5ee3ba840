#!/usr/bin/env bash
# COCO captioning (cross-entropy): 8 GPUs x batch 64, lr 3e-5, 30 epochs, seq2seq only,
# from the CC checkpoint (CC_CKPT, default its epoch 30).
source "$(dirname "$0")/launch.sh"
: "${DATA_ROOT:?set DATA_ROOT}" "${CHECKPOINT_ROOT:?set CHECKPOINT_ROOT}" "${BERT:?set BERT to a BERT directory}"
: "${CC_CKPT:=$CHECKPOINT_ROOT/cc_g8_lr1e-4_batch512_s0.75_b0.25/model.30}"
train 8 --output_dir "$CHECKPOINT_ROOT/coco_g8_lr3e-5_batch512_ft_from_s0.75_b0.25" \
    --bert_model "$BERT" --model_recover_path "$CC_CKPT" --do_train --learning_rate 3e-5 \
    --train_batch_size 64 --num_train_epochs 30 --new_segment_ids --always_truncate_tail --amp \
    --src_file "$DATA_ROOT/COCO/annotations/dataset_coco.json" \
    --file_valid_jpgs "$DATA_ROOT/COCO/annotations/coco_valid_jpgs.json" \
    --image_root "$DATA_ROOT/COCO/region_feat_gvd_wo_bgd" --enable_butd --s2s_prob 1 --bi_prob 0 "$@"
