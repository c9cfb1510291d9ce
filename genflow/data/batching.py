"""Batching: padding collate with masks, and a length-bucketed, resumable, shardable batch sampler."""

from __future__ import annotations

import math

import numpy as np
import torch


def collate(items: list[dict | None]) -> dict:
    """Pad a list of items into a batch; None items (bad clips) are dropped and counted.

    Tensors (T, ...) -> (B, T_max, ...) zero-padded, and ``"lengths"`` (B,) long: the unpadded length of
    each item along its first axis (samples for waveforms, frames for cached latents; whoever reads the
    batch knows which). Every tensor of an item shares its length (e.g. "clean" and "noisy"). Strings and
    other values become lists.
    """
    kept = [it for it in items if it is not None]
    if not kept:
        raise ValueError("collate got a batch with no valid item; the dataset returned None for all of them")
    batch: dict = {}
    for k, v in kept[0].items():
        if isinstance(v, torch.Tensor):
            batch[k] = torch.nn.utils.rnn.pad_sequence([it[k] for it in kept], batch_first=True)
            batch.setdefault("lengths", torch.tensor([it[k].shape[0] for it in kept]))
        else:
            batch[k] = [it[k] for it in kept]
    batch["num_skipped"] = len(items) - len(kept)
    return batch


class LengthBucketSampler:
    """Batches of similar lengths, shuffled with a seed; deterministic per epoch and resumable.

    Each epoch (``set_epoch``): shuffle all indices, sort them by length inside windows of
    ``bucket_batches`` batches, cut into batches, shuffle the batch order. The order depends only on
    (seed, epoch), so a resumed run skips the batches already consumed (``genflow.training``).

    DDP: either pass ``num_replicas``/``rank`` (each rank takes every num_replicas-th batch; the tail
    is dropped so ranks get equal counts) and keep the loader out of ``accelerator.prepare``, or keep
    num_replicas=1 and let ``accelerator.prepare`` wrap it in ``BatchSamplerShard``, which deals the
    same global batch order round-robin to the processes.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        bucket_batches: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"got batch_size={batch_size}, rank={rank}, num_replicas={num_replicas}; expected "
                "batch_size >= 1 and 0 <= rank < num_replicas"
            )
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.bucket_batches = bucket_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(
                f"{len(lengths)} items in batches of {batch_size} (drop_last={drop_last}) give no batch for each of "
                f"{num_replicas} replicas; use more data, a smaller batch_size or drop_last=False"
            )

    def _global_batches(self, epoch: int) -> list[list[int]]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        window = self.batch_size * self.bucket_batches
        for s in range(0, n, window):  # sort by length inside windows: batches of similar lengths
            chunk = order[s : s + window]
            order[s : s + window] = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
        batches = [order[s : s + self.batch_size].tolist() for s in range(0, n, self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        n = len(self.lengths) // self.batch_size if self.drop_last else math.ceil(len(self.lengths) / self.batch_size)
        return n // self.num_replicas

    def __iter__(self):
        batches = self._global_batches(self.epoch)
        yield from batches[self.rank : len(self) * self.num_replicas : self.num_replicas]

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batch order the next iteration yields."""
        self.epoch = epoch


class SkipBatches:
    """A batch sampler's epoch with its first ``skip`` batches dropped: the one mechanism of an exact resume."""

    def __init__(self, batch_sampler, skip: int):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.skip:
                yield batch

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)
