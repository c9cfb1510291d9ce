"""Batching: padding collate with masks, and a length-bucketed, resumable, shardable batch sampler."""

from __future__ import annotations

import math

import numpy as np
import torch


def collate(items: list[dict | None]) -> dict:
    """Pad a list of items into a batch; None items (bad clips) are dropped and counted.

    Latents (T, C) -> (B, T, C) + "mask" (B, T) bool; waveforms (N,) -> (B, N) + "audio_mask" (B, N)
    (latent frame counts of audio are the codec's business: ``Codec.num_frames``). Every tensor of an
    item shares its length (e.g. "clean" and "noisy"). Strings and other values become lists.
    """
    kept = [it for it in items if it is not None]
    if not kept:
        raise ValueError("collate got a batch with no valid item; the dataset returned None for all of them")
    batch: dict = {}
    tensor_keys = [k for k, v in kept[0].items() if isinstance(v, torch.Tensor)]
    lengths = torch.tensor([it[tensor_keys[0]].shape[0] for it in kept]) if tensor_keys else None
    for k, v in kept[0].items():
        if isinstance(v, torch.Tensor):
            batch[k] = torch.nn.utils.rnn.pad_sequence([it[k] for it in kept], batch_first=True)
        else:
            batch[k] = [it[k] for it in kept]
    if tensor_keys:
        valid = torch.arange(batch[tensor_keys[0]].shape[1])[None, :] < lengths[:, None]  # (B, T or N)
        if kept[0][tensor_keys[0]].dim() == 1:
            batch["audio_mask"] = valid
        else:
            batch["mask"] = valid
    batch["num_skipped"] = len(items) - len(kept)
    return batch


class LengthBucketSampler:
    """Batches of similar lengths, shuffled with a seed; deterministic per epoch and resumable.

    Each epoch: shuffle all indices, sort them by length inside windows of ``bucket_batches``
    batches, cut into batches, shuffle the batch order. Iterating ends the epoch: the next iteration
    is the next epoch. ``state_dict()`` / ``load_state_dict()`` hold (epoch, position in batches).

    DDP: either pass ``num_replicas``/``rank`` (each rank takes every num_replicas-th batch; the tail
    is dropped so ranks get equal counts) and keep the loader out of ``accelerator.prepare``, or keep
    num_replicas=1 and let ``accelerator.prepare`` wrap it in ``BatchSamplerShard``, which deals the
    same global batch order round-robin to the processes. Accelerate calls ``set_epoch(n)`` with its own
    pass counter at each ``iter``; after ``load_state_dict`` call ``dataloader.set_epoch(epoch)`` too.
    With DataLoader workers the loader pulls batches ahead of the loop: for an exact resume save
    ``state_dict(consumed=k)``, k = batches this sampler has given the loop since it was (re)started.
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
        self.position = 0  # batches of this epoch already yielded (on this rank)
        self._origin = (0, 0)  # (epoch, position) where the current run started, for state_dict(consumed=...)
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
        mine = batches[self.rank : len(self) * self.num_replicas : self.num_replicas]
        while self.position < len(mine):
            self.position += 1
            yield mine[self.position - 1]
        self.epoch, self.position = self.epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` (from its first batch); a call with the current epoch keeps the position."""
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0
            self._origin = (epoch, 0)

    def state_dict(self, consumed: int | None = None) -> dict:
        """{"epoch", "position", "seed"}: the data order now (or after ``consumed`` batches)."""
        if consumed is None:
            epoch, position = self.epoch, self.position
        else:
            total = self._origin[1] + consumed
            epoch, position = self._origin[0] + total // len(self), total % len(self)
        return {"epoch": epoch, "position": position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved (epoch, position); the seed must match the one saved."""
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"sampler state was saved with seed {state['seed']}, this sampler has seed {self.seed}; "
                "resume with the same seed"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._origin = (self.epoch, self.position)
