"""Ready-to-use generators: a release folder (EMA DiT) + its codec + its text encoder.

    import genflow
    gen = genflow.load("runs/tta-demo/release")          # or a hub id
    clips = gen.generate(["a dog barking"], duration_s=5, seed=0)   # list of (N,) waveforms
    clean = gen.enhance(noisy, sample_rate=48000)                    # enhancement releases

Sampling is deterministic for a seed: every clip's starting noise is drawn on the CPU from its own
``torch.Generator`` seeded with ``seed``, so results do not depend on the batch it was drawn in or the
device. Guidance runs both halves of classifier-free guidance in one batched forward (``genflow.flow``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from genflow.audio import resample
from genflow.codecs.base import Codec
from genflow.flow import make_noise, sample, sigma_schedule

#: Sampling settings used when neither the release nor the call gives one.
DEFAULTS = {
    "duration_s": 10.0,
    "steps": 25,
    "guidance_scale": 3.0,
    "guidance_rescale": 0.0,
    "sampler": "euler",
    "schedule": "sway",
    "shift": 3.0,
    "sway_coef": -1.0,
    "chunk_s": 10.0,  # enhancement: window length for long files
    "overlap_s": 1.0,  # enhancement: crossfaded overlap between windows
}


class Generator:
    """An eval-mode DiT with its frozen codec and text encoder; ``generate`` and ``enhance``."""

    def __init__(self, model: torch.nn.Module, codec: Codec, text_encoder=None, *, defaults: dict | None = None,
                 dtype: torch.dtype | None = None, codec_id: str | None = None, text_encoder_id: str | None = None):
        self.model, self.codec, self.text_encoder = model, codec, text_encoder
        self.defaults = {**DEFAULTS, **(defaults or {})}
        self.dtype = None if dtype == torch.float32 else dtype  # autocast dtype (e.g. torch.bfloat16); None = fp32
        # What the release named them (for sidecars / reports); None when built by hand.
        self.codec_id, self.text_encoder_id = codec_id, text_encoder_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    def _setting(self, name: str, value):
        return self.defaults[name] if value is None else value

    def _sample(self, noise, *, mask=None, text=None, text_mask=None, aligned=None, steps=None, guidance_scale=None,
                sampler=None, schedule=None, progress=False) -> torch.Tensor:
        """Noise (B, T, C) -> latents with the configured sampler/schedule (fp32 in, fp32 out)."""
        sigmas = sigma_schedule(int(self._setting("steps", steps)), kind=self._setting("schedule", schedule),
                                shift=self.defaults["shift"], sway_coef=self.defaults["sway_coef"]).to(self.device)
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)
        with torch.inference_mode(), autocast:
            x = sample(self.model, noise, sigmas, solver=self._setting("sampler", sampler),
                       guidance_scale=float(self._setting("guidance_scale", guidance_scale)),
                       guidance_rescale=float(self.defaults["guidance_rescale"]), mask=mask, text=text,
                       text_mask=text_mask, aligned=aligned, progress=progress)
        return x.float()

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], duration_s: float | None = None, steps: int | None = None,
                 guidance_scale: float | None = None, sampler: str | None = None, schedule: str | None = None,
                 seed: int | Sequence[int] = 0, batch_size: int = 8, progress: bool = False) -> list[torch.Tensor]:
        """Text prompts -> one (N,) waveform at ``sample_rate`` per prompt.

        ``seed`` is one seed for every prompt or a list with one seed per prompt; a clip depends only on
        its prompt, seed and settings, never on the batch it was drawn in.
        """
        if self.text_encoder is None:
            raise ValueError("this model has no text encoder (an enhancement model?): use enhance() instead")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError(f"prompts must be non-empty strings, got {prompts!r}")
        seeds = [int(seed)] * len(prompts) if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; give one seed or one per prompt")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected a positive integer")
        duration = float(self._setting("duration_s", duration_s))
        if duration <= 0:
            raise ValueError(f"duration_s={duration}: expected a positive number of seconds")
        n_samples = max(1, round(duration * self.codec.sample_rate))
        frames = max(1, self.codec.num_frames(n_samples))
        out: list[torch.Tensor] = []
        batches = range(0, len(prompts), batch_size)
        for start in tqdm(batches, desc="generate", disable=not progress or len(batches) == 1):
            chunk = list(prompts[start : start + batch_size])
            noise = torch.stack([make_noise((frames, self.codec.latent_dim), seed=s)
                                 for s in seeds[start : start + batch_size]])
            text, text_mask = self.text_encoder(chunk)
            latent = self._sample(noise.to(self.device), text=text.float().to(self.device),
                                  text_mask=text_mask.to(self.device), steps=steps, guidance_scale=guidance_scale,
                                  sampler=sampler, schedule=schedule, progress=progress and len(batches) == 1)
            audio = self.codec.decode(latent).float().cpu()  # (B, ~n_samples): trim/pad to the exact length
            audio = torch.nn.functional.pad(audio, (0, max(0, n_samples - audio.shape[1])))[:, :n_samples]
            out.extend(audio[i] for i in range(len(chunk)))
        return out

    @torch.inference_mode()
    def enhance(self, waveform: torch.Tensor, sample_rate: int, steps: int | None = None,
                guidance_scale: float | None = None, seed: int = 0, chunk_s: float | None = None,
                overlap_s: float | None = None, batch_size: int = 4, progress: bool = False) -> torch.Tensor:
        """Noisy speech (N,) or (channels, N) at ``sample_rate`` -> enhanced mono (N,) at ``sample_rate``.

        Long inputs run in windows of ``chunk_s`` seconds overlapping by ``overlap_s``, ``batch_size``
        windows at a time, so memory is bounded whatever the length; the overlaps are crossfaded with
        equal-power (sine/cosine) ramps. Every window reads its starting noise from one sequence drawn
        for the whole file, so overlapping windows start from the same noise.
        """
        wav = torch.as_tensor(waveform, dtype=torch.float32)
        if wav.ndim == 2:
            wav = wav.mean(0)
        if wav.ndim != 1 or wav.numel() == 0:
            raise ValueError(f"waveform must be (N,) or (channels, N) and non-empty, got shape {tuple(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise ValueError("waveform contains NaN or inf samples; clean the input first")
        x = resample(wav, sample_rate, self.codec.sample_rate) if sample_rate != self.codec.sample_rate else wav
        n = x.numel()
        hop = self.codec.hop_length
        chunk = max(hop, round(float(self._setting("chunk_s", chunk_s)) * self.codec.sample_rate / hop) * hop)
        overlap = round(float(self._setting("overlap_s", overlap_s)) * self.codec.sample_rate / hop) * hop
        overlap = min(overlap, chunk // 2)
        stride = chunk - overlap
        n_chunks = 1 if n <= chunk else 1 + math.ceil((n - chunk) / stride)
        # Pad to whole windows (one window: to whole codec frames) so every sample gets decoded output.
        width = chunk if n_chunks > 1 else math.ceil(n / hop) * hop
        padded = torch.nn.functional.pad(x, (0, (n_chunks - 1) * stride + width - n))
        total_frames = self.codec.num_frames(padded.numel()) + 1
        noise_all = make_noise((total_frames, self.codec.latent_dim), seed=seed)
        starts = [i * stride for i in range(n_chunks)]
        out = torch.zeros(padded.numel())
        weight = torch.zeros(padded.numel())
        fade = self._fade(width, overlap, n_chunks)
        for b in tqdm(range(0, n_chunks, batch_size), desc="enhance", disable=not progress):
            group = starts[b : b + batch_size]
            audio = torch.stack([padded[s : s + width] for s in group]).to(self.device)
            cond = self.codec.encode(audio).float()
            frames = cond.shape[1]
            noise = torch.stack([noise_all[s // hop : s // hop + frames] for s in group]).to(self.device)
            latent = self._sample(noise, aligned=cond, steps=steps, guidance_scale=guidance_scale)
            clean = self.codec.decode(latent).float().cpu()
            for s, piece in zip(group, clean):
                m = min(piece.numel(), width)
                w = fade.clone()
                if s == 0:  # nothing to fade against before the first window or after the last
                    w[:overlap] = 1.0
                if s == starts[-1]:
                    w[width - overlap :] = 1.0
                out[s : s + m] += piece[:m] * w[:m]
                weight[s : s + m] += w[:m]
        # Where the decoder's output was shorter than the window (codec frame rounding) nothing was
        # written; dividing by the summed fade weights keeps the crossfade exact elsewhere.
        out = torch.where(weight > 1e-6, out / weight.clamp_min(1e-6), torch.zeros_like(out))[:n]
        if sample_rate != self.codec.sample_rate:
            out = resample(out, self.codec.sample_rate, sample_rate)
        return out

    @staticmethod
    def _fade(width: int, overlap: int, n_chunks: int) -> torch.Tensor:
        """Per-window weights: ramps over the overlaps (normalised by their sum), 1 elsewhere."""
        w = torch.ones(width)
        if n_chunks > 1 and overlap > 0:
            ramp = torch.sin(torch.linspace(0, math.pi / 2, overlap + 2)[1:-1]) ** 2
            w[:overlap] = ramp
            w[-overlap:] = ramp.flip(0)
        return w


def load(path_or_hub_id: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         revision: str | None = None) -> Generator:
    """A release folder or hub id -> ready ``Generator`` (EMA DiT + codec + text encoder, eval mode)."""
    from genflow.codecs import load_codec
    from genflow.release import load_release
    from genflow.text import CachedTextEncoder, load_text_encoder

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # The weights stay fp32; ``dtype`` is the autocast dtype. CPU autocast runs bf16 only.
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype={dtype}: expected None/torch.float32 (fp32), torch.bfloat16 or torch.float16")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("dtype=torch.float16 is not supported on CPU; use torch.bfloat16 or None (fp32)")
    model, meta, folder = load_release(path_or_hub_id, revision=revision)
    codec_id = meta["codec"]
    codec_path = folder / codec_id
    codec = load_codec(str(codec_path) if codec_path.is_dir() else codec_id, device=device)
    text_encoder = None
    if meta.get("text_encoder"):
        text_path = folder / meta["text_encoder"]  # a folder shipped inside the release, else an id
        name = str(text_path) if text_path.is_dir() else meta["text_encoder"]
        text_encoder = CachedTextEncoder(load_text_encoder(name, device=device))
    model = model.to(device).eval()
    return Generator(model, codec, text_encoder, defaults=meta.get("defaults"), dtype=dtype, codec_id=codec_id,
                     text_encoder_id=meta.get("text_encoder"))
