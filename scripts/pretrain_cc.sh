#!/usr/bin/env bash
# VLP pretraining on Conceptual Captions: 8 GPUs x batch 64, lr 1e-4, 30 epochs,
# seq2seq 0.75 / bidirectional 0.25, from UniLM's checkpoint (VLP's README:
# $CHECKPOINT_ROOT/bert_save/base_model_pretrained/model_153999_cpu.bin, UNILM to put it
# elsewhere; BERT sizes it); the first region layer starts from the BUTD detector's fc7
# (VLP's detectron_weights/, FC7_DIR to put it elsewhere).
#   DATA_ROOT=/data CHECKPOINT_ROOT=/ckpt BERT=/models/bert-base-cased scripts/pretrain_cc.sh
source "$(dirname "$0")/launch.sh"
: "${DATA_ROOT:?set DATA_ROOT}" "${CHECKPOINT_ROOT:?set CHECKPOINT_ROOT}" "${BERT:?set BERT to a BERT directory}"
train 8 --output_dir "$CHECKPOINT_ROOT/cc_g8_lr1e-4_batch512_s0.75_b0.25" \
    --bert_model "$BERT" \
    --model_recover_path "${UNILM:-$CHECKPOINT_ROOT/bert_save/base_model_pretrained/model_153999_cpu.bin}" \
    --do_train --learning_rate 1e-4 --train_batch_size 64 \
    --num_train_epochs 30 --new_segment_ids --always_truncate_tail --amp \
    --src_file "$DATA_ROOT/CC/annotations/dataset_cc.json" --dataset cc --split train \
    --file_valid_jpgs "$DATA_ROOT/CC/annotations/cc_valid_jpgs.json" --enable_butd \
    --region_fc7 "${FC7_DIR:-$DATA_ROOT/detectron_weights}" \
    --s2s_prob 0.75 --bi_prob 0.25 --image_root "$DATA_ROOT/CC/region_feat_gvd_wo_bgd" \
    --region_bbox_file bbox/cc_detection_vg_thresh0.2_feat_gvd_checkpoint_trainval.h5 \
    --region_det_file_prefix feat_cls_1000_float16/cc_detection_vg_100dets_gvd_checkpoint_trainval \
    --save_steps 5000 "$@"
