"""Data: JSONL manifests + validation, the latent cache, datasets, and batching with masks."""

from genflow.data.batching import LengthBucketSampler, SkipBatches, collate
from genflow.data.cache import LatentCache, build_latent_cache, codec_signature, resolve_cache_dir
from genflow.data.datasets import SpeechPairDataset, TextAudioDataset, active_power, mix_at_snr
from genflow.data.manifest import (
    ValidationReport,
    drop_uncaptioned,
    index_audio_files,
    read_manifest,
    validate_manifest,
    validate_spread,
    write_manifest,
    write_splits,
)

__all__ = [
    "drop_uncaptioned",
    "LatentCache",
    "LengthBucketSampler",
    "SkipBatches",
    "SpeechPairDataset",
    "TextAudioDataset",
    "ValidationReport",
    "active_power",
    "build_latent_cache",
    "codec_signature",
    "collate",
    "index_audio_files",
    "mix_at_snr",
    "read_manifest",
    "resolve_cache_dir",
    "validate_manifest",
    "validate_spread",
    "write_manifest",
    "write_splits",
]
