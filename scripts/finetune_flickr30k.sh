#!/usr/bin/env bash
# Flickr30k captioning: 8 GPUs x batch 64, lr 3e-5, 30 epochs, seq2seq only, from the
# CC checkpoint; per-image .npy features under the image root, as VLP's release.
source "$(dirname "$0")/launch.sh"
: "${DATA_ROOT:?set DATA_ROOT}" "${CHECKPOINT_ROOT:?set CHECKPOINT_ROOT}" "${BERT:?set BERT to a BERT directory}"
: "${CC_CKPT:=$CHECKPOINT_ROOT/cc_g8_lr1e-4_batch512_s0.75_b0.25/model.30}"
FEAT="$DATA_ROOT/flickr30k/region_feat_gvd_wo_bgd"
train 8 --output_dir "$CHECKPOINT_ROOT/flickr30k_g8_lr3e-5_batch512_ft_from_s0.75_b0.25" \
    --bert_model "$BERT" --model_recover_path "$CC_CKPT" --do_train --learning_rate 3e-5 \
    --train_batch_size 64 --num_train_epochs 30 --new_segment_ids --always_truncate_tail --amp \
    --image_root "$FEAT" --enable_butd --s2s_prob 1 --bi_prob 0 --dataset flickr30k \
    --region_bbox_file "$FEAT/flickr30k_detection_vg_thresh0.2_feat_gvd_checkpoint_trainvaltest.h5" \
    --src_file "$DATA_ROOT/flickr30k/annotations/dataset_flickr30k.json" \
    --file_valid_jpgs "$DATA_ROOT/flickr30k/annotations/flickr30k_valid_jpgs.json" "$@"
