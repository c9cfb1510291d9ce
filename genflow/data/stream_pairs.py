"""Speech-enhancement pairs streamed from tar shards: clean + noisy files, or clean files mixed with noise.

    python -m genflow.data.stream write data/vbd/train.jsonl shards/se-%06d.tar   # {"clean", "noisy"} rows
    accelerate launch recipes/se/train.py --data 'shards/se-{000000..000127}.tar'
    accelerate launch recipes/se/train.py --data 'shards/clean-{000..127}.tar' --data.noise noise.jsonl

A sample is ``KEY.clean.EXT`` (+ ``KEY.noisy.EXT``) + ``KEY.json``. Crops, noise draws, SNRs and the
clipping guard are ``SpeechPairDataset``'s own, applied to the decoded sample with the same (seed, epoch,
row number) generator: the same rows give the same pairs and the same loss as the manifest path. The
order, the split over ranks and workers and the resumable position are ``ShardStream``'s.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from genflow.data.datasets import SpeechPairDataset
from genflow.data.stream import AUDIO_EXTENSIONS, ShardStream, _decode


class _DecodedPairs(SpeechPairDataset):
    """``SpeechPairDataset`` whose "files" are the decoded audio of one shard sample (noise files stay files)."""

    def __init__(self, *, paired: bool, **kw):
        super().__init__([{"id": "-", "clean": "-", "noisy": "-"} if paired else {"id": "-", "clean": "-"}], **kw)
        self.decoded: dict[str, torch.Tensor] = {}

    def _load(self, path: str) -> torch.Tensor:
        return self.decoded[path] if path in self.decoded else super()._load(path)


class SpeechPairStream(ShardStream):
    """Collated batches {"id", "clean" (B, N), "noisy" (B, N), "lengths"} of speech pairs streamed from shards.

    ``noise_rows`` ({"audio"} rows of a noise manifest): the noisy side is mixed on the fly from the clean
    file at an SNR drawn from ``snr_range`` dB (a ``noisy`` file in the shard is then not read).
    """

    def __init__(self, shards: list[str], *, noise_rows: list[dict] | None = None,
                 snr_range: tuple[float, float] = (-5.0, 20.0), **kw):
        super().__init__(shards, **kw)
        self.target = "clean"
        self.pairs = _DecodedPairs(paired=not noise_rows, noise_rows=noise_rows, snr_range=snr_range,
                                   codec_sample_rate=self.sample_rate, hop_length=self.hop_length,
                                   max_frames=self.max_frames, random_crop=self.random_crop, seed=self.seed)

    def _item(self, sample: dict, epoch: int) -> dict:
        """One sample -> {"id", "clean", "noisy"}, cut (and mixed) as ``SpeechPairDataset`` cuts a manifest row."""
        meta = json.loads(sample["json"]) if "json" in sample else {}
        name, wanted = sample["__key__"], ("clean", "noisy") if self.pairs.noise_rows is None else ("clean",)
        files = {ext.partition(".")[0]: ext for ext in sample if ext.rpartition(".")[2] in AUDIO_EXTENSIONS}
        missing = [k for k in wanted if k not in files]
        if missing:
            raise ValueError(f"shard sample {name} has no {missing} audio ({sorted(sample)}); expected "
                             f"{name}.clean.EXT{' and .noisy.EXT' if len(wanted) == 2 else ''}")
        # the row's "paths" name the decoded audio: SpeechPairDataset._item loads them through _DecodedPairs
        self.pairs.decoded = {f"{name}.{k}": _decode(sample[files[k]], f"{name}.{k}", self.sample_rate) for k in wanted}
        row = {"id": str(meta.get("id", name)), **{k: f"{name}.{k}" for k in wanted}}
        rng = np.random.default_rng([self.seed, epoch, int(meta.get("__index__", 0))])
        return self.pairs._item(row, rng)
