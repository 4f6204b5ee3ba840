#!/usr/bin/env bash
# COCO SCST (CIDEr-D reward): 4 GPUs x batch 16, lr 1e-6, 30 epochs, from the
# cross-entropy checkpoint (CE_CKPT, default its epoch 28 as in VLP's README).
source "$(dirname "$0")/launch.sh"
: "${DATA_ROOT:?set DATA_ROOT}" "${CHECKPOINT_ROOT:?set CHECKPOINT_ROOT}" "${BERT:?set BERT to a BERT directory}"
: "${CE_CKPT:=$CHECKPOINT_ROOT/coco_g8_lr3e-5_batch512_ft_from_s0.75_b0.25/model.28}"
train 4 --output_dir "$CHECKPOINT_ROOT/coco_g4_lr1e-6_batch64_scst" \
    --bert_model "$BERT" --model_recover_path "$CE_CKPT" --do_train --scst \
    --learning_rate 1e-6 --train_batch_size 16 --num_train_epochs 30 --new_segment_ids \
    --always_truncate_tail --amp --max_pred 0 --mask_prob 0 \
    --src_file "$DATA_ROOT/COCO/annotations/dataset_coco.json" \
    --file_valid_jpgs "$DATA_ROOT/COCO/annotations/coco_valid_jpgs.json" \
    --image_root "$DATA_ROOT/COCO/region_feat_gvd_wo_bgd" --enable_butd --s2s_prob 1 --bi_prob 0 "$@"
