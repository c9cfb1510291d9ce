"""Ready-to-use generators: a release (EMA weights) + its conditioner (codec, text encoder) + its settings.

    import genflow
    gen = genflow.load("runs/tta-demo/release")          # or a hub id
    clips = gen.generate(["a dog barking"], duration_s=5, seed=0)   # list of (N,) waveforms
    clean = gen.enhance(noisy, sample_rate=48000)                    # enhancement releases

Any ``SamplingSettings`` field can be given by name to ``generate``/``enhance``; the release's settings
fill the rest. Sampling is deterministic for a seed: every clip's starting noise is drawn on the CPU
from its own ``torch.Generator`` seeded with ``seed``, so results do not depend on the batch it was
drawn in or the device. Guidance runs both halves of classifier-free guidance in one batched forward.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from genflow.audio import resample
from genflow.conditioning import Conditioner, build_conditioner
from genflow.config import from_dict
from genflow.flow import Source, make_noise, sample
from genflow.meanflow import sample_average
from genflow.sampling import SamplingSettings

#: a release's "prediction" -> its sampler
SAMPLERS = {"velocity": sample, "average_velocity": sample_average}
logger = logging.getLogger("genflow.pipeline")


def _without_autograd(method):
    """Run a Generator method under its ``_no_autograd()`` mode."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._no_autograd():
            return method(self, *args, **kwargs)

    return wrapper


class Generator:
    """An eval-mode model with its conditioner and sampling settings; ``generate`` and ``enhance``."""

    def __init__(self, model: torch.nn.Module, conditioner: Conditioner, settings: SamplingSettings | None = None,
                 *, dtype: torch.dtype | None = None, codec_id: str | None = None, text_encoder_id: str | None = None,
                 trained_seconds: tuple[float, float] | None = None, inference_mode: bool = True,
                 prediction: str = "velocity", source: Source | None = None):
        self.model, self.conditioner = model, conditioner
        # False: plain no_grad (training previews: FSDP2 cannot unshard parameters inside inference_mode)
        self.inference_mode = inference_mode
        self.settings = settings or SamplingSettings()
        # What the model predicts decides the sampler, once: the ODE solvers for a velocity, jumps for an
        # average velocity (few-step models: one forward per step, guidance already folded in).
        if prediction not in SAMPLERS:
            raise ValueError(f"prediction={prediction!r}: expected one of {', '.join(SAMPLERS)}")
        self.prediction, self._sampler = prediction, SAMPLERS[prediction]
        self.source = source or Source()  # where the flow starts: N(0, I), or the input's latents + noise
        self.dtype = None if dtype == torch.float32 else dtype  # autocast dtype (e.g. torch.bfloat16); None = fp32
        # What the release named them (for sidecars / reports); None when built by hand.
        self.codec_id, self.text_encoder_id = codec_id, text_encoder_id
        # (shortest, longest) training clip in seconds, when the release says: beyond them, results degrade.
        self.trained_seconds = trained_seconds
        self._warned: set[str] = set()

    def _no_autograd(self):
        """``torch.inference_mode()``, or ``torch.no_grad()`` when built with ``inference_mode=False``."""
        return torch.inference_mode() if self.inference_mode else torch.no_grad()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("warning: %s", message)

    @property
    def codec(self):
        return self.conditioner.codec

    @property
    def text_encoder(self):
        return self.conditioner.text_encoder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def sample_rate(self) -> int:
        """The rate of generated audio: the codec decoder's (24/44.1 kHz for a decoder trained wider, recipes/codec)."""
        return self.codec.output_sample_rate

    def _sample(self, noise, settings: SamplingSettings, progress=False, **conditions) -> torch.Tensor:
        """Noise (B, T, C) -> latents with the settings' solver/schedule/guidance (fp32 in, fp32 out)."""
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)
        solver = {"solver": settings.solver} if self._sampler is sample else {}
        if not solver and settings.solver != "euler":
            raise ValueError(f"solver={settings.solver!r}: an average-velocity model jumps with one evaluation per "
                             "step and takes no ODE solver; use solver='euler' (its release's default)")
        with self._no_autograd(), autocast:
            x = self._sampler(self.model, noise, settings.sigmas(self.device), **solver,
                              guidance_scale=settings.guidance_scale, guidance_rescale=settings.guidance_rescale,
                              progress=progress, **conditions)
        return x.float()

    def _frames(self, settings: SamplingSettings, text, text_mask) -> list[int]:
        """Latent frames per prompt: from ``duration_s``, or the model's own prediction when it is None."""
        if settings.duration_s is not None:
            samples = max(1, round(settings.duration_s * self.codec.sample_rate))  # at the encoder's rate
            return [max(1, self.codec.num_frames(samples))] * len(text)
        predict = getattr(self.model, "predict_frames", None)
        if predict is None:
            raise ValueError("duration_s=None but this model predicts no duration; give duration_s in seconds")
        return [int(n) for n in predict(text, text_mask).tolist()]

    @_without_autograd
    def generate(self, prompts: Sequence[str], *, seed: int | Sequence[int] = 0, batch_size: int = 8,
                 progress: bool = False, **settings) -> list[torch.Tensor]:
        """Text prompts -> one (N,) waveform at ``sample_rate`` per prompt.

        ``settings``: any ``SamplingSettings`` field (``duration_s``, ``steps``, ``guidance_scale``, ...).
        ``seed`` is one seed for every prompt or one per prompt; a clip depends only on its prompt, seed and
        settings, never on the batch it was drawn in (each clip has its own noise and mask).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError(f"prompts must be non-empty strings, got {prompts!r}")
        seeds = [int(seed)] * len(prompts) if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; give one seed or one per prompt")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected a positive integer")
        if self.source.kind != "noise":
            raise ValueError(f"this model's flow starts from an aligned input ({self.source.kind!r}): it enhances "
                             "audio (enhance / enhance.py) and cannot generate from text alone")
        cfg = self.settings.replace(**settings)
        if self.trained_seconds and cfg.duration_s and cfg.duration_s > self.trained_seconds[1]:
            self._warn_once("long", f"duration_s={cfg.duration_s:g} is longer than any clip this model was trained "
                                    f"on ({self.trained_seconds[1]:g} s); expect repetition or degraded audio")
        exact = max(1, round((cfg.duration_s or 0) * self.sample_rate))  # samples per clip for a given duration
        out: list[torch.Tensor] = []
        batches = range(0, len(prompts), batch_size)
        for start in tqdm(batches, desc="generate", disable=not progress or len(batches) == 1):
            chunk = prompts[start : start + batch_size]
            text, text_mask = self.conditioner.encode_text(chunk, self.device)
            frames = self._frames(cfg, text, text_mask)
            noise = torch.nn.utils.rnn.pad_sequence(
                [make_noise((n, self.codec.latent_dim), seed=s) for n, s in zip(frames, seeds[start:])],
                batch_first=True).to(self.device)  # (B, T_max, C)
            mask = torch.arange(noise.shape[1])[None, :] < torch.tensor(frames)[:, None]
            ragged = len(set(frames)) > 1
            latent = self._sample(noise, cfg, progress=progress and len(batches) == 1, text=text,
                                  text_mask=text_mask, mask=mask.to(self.device) if ragged else None)
            audio = self.codec.decode(latent).float().cpu()  # (B, ~samples): trim/pad to the exact length
            for row, n in zip(audio, frames):
                samples = n * self.codec.output_hop_length if cfg.duration_s is None else exact
                out.append(torch.nn.functional.pad(row, (0, max(0, samples - row.numel())))[:samples])
        return out

    @_without_autograd
    def enhance(self, waveform: torch.Tensor, sample_rate: int, *, seed: int = 0, batch_size: int = 4,
                progress: bool = False, **settings) -> torch.Tensor:
        """Noisy speech (N,) or (channels, N) at ``sample_rate`` -> enhanced mono (N,) at ``sample_rate``.

        Long inputs run in windows of ``chunk_s`` seconds overlapping by ``overlap_s``, ``batch_size``
        windows at a time, so memory is bounded whatever the length; the overlaps are crossfaded with
        equal-power (sine/cosine) ramps. Every window reads its starting noise from one sequence drawn
        for the whole file, so overlapping windows start from the same noise. ``phase="input"`` decodes the
        enhanced magnitude with the noisy window's own STFT phase (magnitude codecs: the mel codec).
        """
        cfg = self.settings.replace(**settings)
        wav = torch.as_tensor(waveform, dtype=torch.float32)
        wav = wav.mean(0) if wav.ndim == 2 else wav
        if wav.ndim != 1 or wav.numel() == 0:
            raise ValueError(f"waveform must be (N,) or (channels, N) and non-empty, got shape {tuple(wav.shape)}")
        if not torch.isfinite(wav).all():
            raise ValueError("waveform contains NaN or inf samples; clean the input first")
        seconds, shortest = wav.numel() / sample_rate, (self.trained_seconds or (0.1, 0))[0]
        if seconds < shortest:
            self._warn_once("short", f"an input of {seconds:.3f} s is shorter than any clip this model was trained "
                                     f"on ({shortest:g} s); expect a poor result")
        rate = self.codec.sample_rate  # enhancement runs at the encoder's rate (a wider decoder's output is resampled)
        x = resample(wav, sample_rate, rate) if sample_rate != rate else wav
        windows = Windows(x.numel(), self.codec.hop_length, cfg.chunk_s * rate, cfg.overlap_s * rate)
        padded = torch.nn.functional.pad(x, (0, windows.padded - x.numel()))
        noise_all = make_noise((self.codec.num_frames(windows.padded) + 1, self.codec.latent_dim), seed=seed)
        out, weight = torch.zeros(windows.padded), torch.zeros(windows.padded)
        hop = self.codec.hop_length
        for b in tqdm(range(0, len(windows.starts), batch_size), desc="enhance", disable=not progress):
            group = windows.starts[b : b + batch_size]
            audio = torch.stack([padded[s : s + windows.width] for s in group]).to(self.device)
            cond, _ = self.conditioner.encode_audio(audio)
            noise = torch.stack([noise_all[s // hop : s // hop + cond.shape[1]] for s in group]).to(self.device)
            noise = self.source.start(noise, cond)
            latent = self._sample(noise, cfg, aligned=cond)
            clean = (self.codec.decode_with_phase(latent, audio) if cfg.phase == "input"
                     else self.codec.decode(latent)).float().cpu()
            if self.sample_rate != rate:
                clean = resample(clean, self.sample_rate, rate)
            for s, piece in zip(group, clean):
                m = min(piece.numel(), windows.width)
                w = windows.weights(s)
                out[s : s + m] += piece[:m] * w[:m]
                weight[s : s + m] += w[:m]
        # Where the decoder's output was shorter than the window (codec frame rounding) nothing was
        # written; dividing by the summed fade weights keeps the crossfade exact elsewhere.
        out = torch.where(weight > 1e-6, out / weight.clamp_min(1e-6), torch.zeros_like(out))[: x.numel()]
        return resample(out, rate, sample_rate) if sample_rate != rate else out


class Windows:
    """Overlapping windows over ``n`` samples, lengths in whole codec hops, and their crossfade weights."""

    def __init__(self, n: int, hop: int, chunk: float, overlap: float):
        self.width = max(hop, round(chunk / hop) * hop)
        self.overlap = min(round(overlap / hop) * hop, self.width // 2)
        stride = self.width - self.overlap
        count = 1 if n <= self.width else 1 + math.ceil((n - self.width) / stride)
        if count == 1:  # one window: pad to whole codec frames so every sample gets decoded output
            self.width = math.ceil(n / hop) * hop
        self.starts = [i * stride for i in range(count)]
        self.padded = (count - 1) * stride + self.width
        ramp = torch.sin(torch.linspace(0, math.pi / 2, self.overlap + 2)[1:-1]) ** 2
        self._fade = torch.ones(self.width)
        if count > 1 and self.overlap > 0:
            self._fade[: self.overlap], self._fade[-self.overlap :] = ramp, ramp.flip(0)

    def weights(self, start: int) -> torch.Tensor:
        """Weights of the window at ``start``: no fade before the first window or after the last."""
        w = self._fade.clone()
        if start == self.starts[0]:
            w[: self.overlap] = 1.0
        if start == self.starts[-1]:
            w[self.width - self.overlap :] = 1.0
        return w


def load(path_or_hub_id: str, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         revision: str | None = None) -> Generator:
    """A release folder or hub id -> ready ``Generator`` (model + codec + text encoder, eval mode)."""
    from genflow.release import load_release

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # ``dtype`` is the autocast dtype (CPU autocast runs bf16 only); genflow DiTs keep fp32 weights, the ~2 B
    # official generator loads its weights straight in that dtype.
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype={dtype}: expected None/torch.float32 (fp32), torch.bfloat16 or torch.float16")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("dtype=torch.float16 is not supported on CPU; use torch.bfloat16 or None (fp32)")
    weights = dtype if dtype in (torch.bfloat16, torch.float16) else None
    model, meta, folder = load_release(path_or_hub_id, revision=revision, device=device, dtype=weights)
    conditioner = build_conditioner(meta["codec"], meta.get("text_encoder"), device=device, root=folder,
                                    prompt_template=meta.get("prompt_template", "{}"))
    return Generator(model.eval(), conditioner, dtype=dtype, codec_id=meta["codec"],
                     text_encoder_id=meta.get("text_encoder"), **release_options(meta))


def release_options(meta: dict) -> dict:
    """How a release says to sample (its checked ``pipeline.json`` dict) -> ``Generator`` keyword arguments."""
    trained = meta.get("trained_seconds")
    return {"settings": SamplingSettings.from_dict(meta.get("sampling") or {}),
            "trained_seconds": tuple(trained) if trained else None,
            "prediction": meta.get("prediction", "velocity"),
            "source": from_dict(Source, meta.get("source") or {}, "pipeline.json 'source'")}
