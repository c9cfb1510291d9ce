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

    ``max_frames`` (a frame budget): a batch holds as many clips as fit ``len(batch) * longest <=
    max_frames`` (at most ``batch_size``, at least one), so short clips come in big batches and long
    ones in small batches, with similar work per step.

    DDP: pass ``num_replicas``/``rank`` and keep the loader out of ``accelerator.prepare``. Batches are
    shuffled in groups of ``num_replicas`` neighbours in length order and rank r takes the r-th of each
    group: at every step all ranks hold batches from the same length bucket, so none waits for a rank
    with longer clips. The tail is dropped so ranks get equal counts.
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
        max_frames: int | None = None,
    ):
        if batch_size < 1 or not 0 <= rank < num_replicas or (max_frames is not None and max_frames < 1):
            raise ValueError(
                f"got batch_size={batch_size}, rank={rank}, num_replicas={num_replicas}, max_frames={max_frames}; "
                "expected batch_size >= 1, 0 <= rank < num_replicas and max_frames >= 1 (or None)"
            )
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.bucket_batches = bucket_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.max_frames = max_frames
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(
                f"{len(lengths)} items in batches of {batch_size} (drop_last={drop_last}) give no batch for each of "
                f"{num_replicas} replicas; use more data, a smaller batch_size or drop_last=False"
            )

    def _cut(self, order: np.ndarray) -> list[list[int]]:
        """Consecutive batches of ``order`` (longest first): ``batch_size`` each, or within the frame budget."""
        if self.max_frames is None:
            return [order[s : s + self.batch_size].tolist() for s in range(0, len(order), self.batch_size)]
        batches, start = [], 0
        while start < len(order):  # sorted longest first: the first clip of a batch sets its padded length
            fit = max(1, min(self.batch_size, self.max_frames // max(1, int(self.lengths[order[start]]))))
            batches.append(order[start : start + fit].tolist())
            start += fit
        return batches

    def _global_batches(self, epoch: int) -> list[list[int]]:
        """This epoch's batches of every rank: rank r's step k is entry k * num_replicas + r."""
        n, r = len(self.lengths), self.num_replicas
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        window = self.batch_size * self.bucket_batches
        batches = [self._cut(chunk[np.argsort(-self.lengths[chunk], kind="stable")])  # similar lengths per window
                   for chunk in (order[s : s + window] for s in range(0, n, window))]
        if self.drop_last and len(batches[-1][-1]) < self.batch_size and self.max_frames is None:
            batches[-1].pop()
        # groups of r neighbours in length order (one group = one step of every rank), inside each window;
        # the few left over by the windows are grouped together, and a short last group is dropped
        groups = [w[g : g + r] for w in batches for g in range(0, len(w) // r * r, r)]
        rest = [b for w in batches for b in w[len(w) // r * r :]]
        groups += [rest[g : g + r] for g in range(0, len(rest) // r * r, r)]
        if self.shuffle:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        return [b for group in groups for b in group]

    def __len__(self) -> int:
        """Batches this rank gets in the current epoch (the same on every rank)."""
        if self.max_frames is None:  # closed form: no need to build the epoch
            size, n = self.batch_size, len(self.lengths)
            n = n // size if self.drop_last else math.ceil(n / size)
            return n // self.num_replicas
        return len(self._global_batches(self.epoch)) // self.num_replicas

    def __iter__(self):
        yield from self._global_batches(self.epoch)[self.rank :: self.num_replicas]

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
