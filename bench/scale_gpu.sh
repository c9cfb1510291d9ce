#!/usr/bin/env bash
# The GPU figures issue 12 asks for, in one go (prints tables; asserts nothing). On a machine with N GPUs:
#   bash bench/scale_gpu.sh            # N from nvidia-smi
#   NGPU=1 bash bench/scale_gpu.sh     # one GPU: the DDP figures of a single rank
# Each run prints valid latent frames/s per GPU, MFU, the time split, padding, SDPA backend and peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
NGPU=${NGPU:-$(nvidia-smi -L | wc -l)}
LAUNCH=(accelerate launch --num_processes "$NGPU" --mixed_precision bf16)
python bench/memory.py --gpus "$NGPU"                                   # the computed table, for comparison
for preset in base large; do
  for ckpt in "" "--checkpointing"; do
    "${LAUNCH[@]}" bench/train_gpu.py --preset "$preset" --batch 32 --seconds 10 --steps 30 $ckpt || true
  done
done
"${LAUNCH[@]}" bench/train_gpu.py --preset large --batch 32 --checkpointing --compile inductor || true
"${LAUNCH[@]}" bench/train_gpu.py --preset large --batch 64 --max-batch-frames 8000 --checkpointing || true
if [ "$NGPU" -gt 1 ]; then
  accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes "$NGPU" \
    bench/train_gpu.py --preset large --batch 32 --checkpointing || true
fi
