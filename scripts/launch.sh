# Launch helpers sourced by the recipe scripts in this folder.
#
#   LAUNCH=explicit (default) starts one `vlp train` per GPU with --local_rank/--global_rank/
#     --world_size/--dist_url, VLP's way; on several machines run the script on each with
#     NNODES=N NODE_RANK=i MASTER_ADDR=<node 0's address>.
#   LAUNCH=torchrun runs `torchrun --nproc_per_node GPUS -m vlp.run_img2txt_dist` (with
#     --nnodes/--node_rank/--master_addr/--master_port on several machines).
#   DRY_RUN=1 prints the commands instead of running them.
#   GPUS overrides the recipe's GPU count per node.

set -euo pipefail

: "${LAUNCH:=explicit}"
: "${NNODES:=1}"
: "${NODE_RANK:=0}"
: "${MASTER_ADDR:=127.0.0.1}"
: "${MASTER_PORT:=29500}"
: "${DRY_RUN:=0}"

run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '%q ' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# train GPUS ARGS... : distributed training with the recipe's GPU count per node.
train() {
    local gpus="${GPUS:-$1}"
    shift
    local world=$((gpus * NNODES))
    if [ "$LAUNCH" = torchrun ]; then
        run torchrun --nproc_per_node "$gpus" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
            --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
            -m vlp.run_img2txt_dist "$@"
        return
    fi
    if [ "$LAUNCH" != explicit ]; then
        echo "LAUNCH must be explicit or torchrun, got $LAUNCH" >&2
        return 2
    fi
    local pids=() local_rank
    for ((local_rank = 0; local_rank < gpus; local_rank++)); do
        local global_rank=$((NODE_RANK * gpus + local_rank))
        if [ "$DRY_RUN" = 1 ]; then
            run vlp train "$@" --local_rank "$local_rank" --global_rank "$global_rank" \
                --world_size "$world" --dist_url "tcp://$MASTER_ADDR:$MASTER_PORT"
        else
            vlp train "$@" --local_rank "$local_rank" \
                --global_rank "$global_rank" --world_size "$world" \
                --dist_url "tcp://$MASTER_ADDR:$MASTER_PORT" &
            pids+=($!)
        fi
    done
    local status=0 pid
    for pid in "${pids[@]}"; do
        wait "$pid" || status=$?
    done
    return "$status"
}
