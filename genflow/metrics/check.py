"""Sanity checks of an evaluation setup, offline and in seconds: ``python -m genflow.metrics check``.

    python -m genflow.metrics check                                   # mel-stats, no weights needed
    python -m genflow.metrics check --backend vggish:vggish.pth --clap ./clap-htsat-unfused

What is checked, on synthetic clips made here (tones, chords, noise bursts, clicks; 16 clips of 2 s):

- ``self_fd`` / ``self_kad``: a set against itself gives FD ~ 0 and KAD ~ 0 (the unbiased KAD of a set of
  m embeddings against itself is exactly -200 (1 - mean off-diagonal kernel) / m, in [-200/m, 0]);
- ``noise_fd`` / ``noise_kad``: adding white noise at falling SNR (30, 20, 10, 0 dB) makes both rise
  strictly (a broken front end, e.g. wrong sample rate or a saturated log, usually flattens this);
- ``small_set_refused``: FD between sets under ``MIN_FD_CLIPS`` clips is refused unless allowed;
- with ``--clap``: ``clap_tone``: a 440 Hz sine scores higher with "a pure tone" than with "a dog
  barking"; ``clap_not_collapsed``: clips as different as a sine, noise, clicks and a chord do not all map
  to one embedding (a known failure of a bad hub conversion of LAION-CLAP music: every cosine ~ 1).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch

NOISE_SNRS_DB = (30.0, 20.0, 10.0, 0.0)
COLLAPSE_COSINE = 0.99  # every pair of very different clips closer than this: the embedding has collapsed


@dataclass
class Check:
    """One named check: whether it passed and the numbers behind the verdict."""

    name: str
    passed: bool
    detail: str


def synthetic_clips(n: int = 16, seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0) -> list[torch.Tensor]:
    """``n`` varied (N,) clips: tones, two-note chords, noise bursts and click trains, each at its own level."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    clips = []
    for i in range(n):
        f = 110.0 * 2 ** (float(torch.rand((), generator=g)) * 4)  # 110 Hz .. 1.76 kHz
        kind = i % 4
        if kind == 0:
            x = torch.sin(2 * math.pi * f * t)
        elif kind == 1:
            x = torch.sin(2 * math.pi * f * t) + torch.sin(2 * math.pi * f * 1.26 * t)
        elif kind == 2:
            x = torch.randn(t.shape, generator=g) * (torch.sin(2 * math.pi * (1 + i) * t) > 0)
        else:
            x = (torch.rand(t.shape, generator=g) < 20 / sample_rate).float() * 4.0
        clips.append(0.3 * (0.3 + float(torch.rand((), generator=g))) * x / x.abs().max().clamp_min(1e-6))
    return clips


def _with_noise(clips: list[torch.Tensor], snr_db: float, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for x in clips:
        noise = torch.randn(x.shape, generator=g)
        out.append(x + noise * x.pow(2).mean().sqrt() / 10 ** (snr_db / 20))
    return out


def _embed(backend, clips: list[torch.Tensor]):
    from genflow.metrics.embeddings import EmbeddedSet

    out = EmbeddedSet()
    for i, (emb, _) in enumerate(backend.embed_batch([backend.prepare(c) for c in clips])):
        out.ids.append(str(i))
        out.embeddings.append(emb.float())
    return out


def distance_checks(backend, clips: list[torch.Tensor]) -> list[Check]:
    """Self-distance ~ 0 and a strict rise of FD and KAD with noise, on ``backend``."""
    from genflow.metrics.embeddings import stats_of
    from genflow.metrics.frechet import frechet_distance_stats
    from genflow.metrics.kad import kernel_audio_distance

    base = _embed(backend, clips)
    base_stats = stats_of(backend, base)
    scale = float(base_stats.sigma.trace())  # FD's natural scale: tr of the covariance
    self_fd = frechet_distance_stats(base_stats, base_stats)
    self_kad = kernel_audio_distance(base.stacked(), base.stacked())
    m = base_stats.n
    fds, kads = [], []
    for k, snr in enumerate(NOISE_SNRS_DB):
        noisy = _embed(backend, _with_noise(clips, snr, seed=k + 1))
        fds.append(frechet_distance_stats(stats_of(backend, noisy), base_stats))
        kads.append(kernel_audio_distance(noisy.stacked(), base.stacked()))
    rising = lambda v: all(b > a for a, b in zip(v, v[1:]))  # noqa: E731
    snrs = "/".join(f"{s:g}" for s in NOISE_SNRS_DB)
    return [
        Check("self_fd", self_fd <= 1e-6 * max(scale, 1.0), f"FD(set, set) = {self_fd:.3g} (scale tr S = {scale:.3g})"),
        # The unbiased estimator of a set against itself is -200 (1 - mean off-diagonal kernel) / m, in
        # [-200/m, 0]: ~ 0 next to the noise levels, and -> 0 as the set grows.
        Check("self_kad", -200.0 / m <= self_kad <= 0.0, f"KAD(set, set) = {self_kad:.3g} (expected in "
              f"[-200/m, 0] = [{-200.0 / m:.3g}, 0] for m = {m} embeddings)"),
        Check("noise_fd", rising(fds), f"FD at SNR {snrs} dB: " + ", ".join(f"{v:.4g}" for v in fds)),
        Check("noise_kad", rising(kads), f"KAD at SNR {snrs} dB: " + ", ".join(f"{v:.4g}" for v in kads)),
    ]


def small_set_check() -> Check:
    """FD between 3-clip sets must be refused without ``allow_small_fd`` and computed with it."""
    from genflow.metrics.folders import MIN_FD_CLIPS, check_sample_size

    try:
        check_sample_size(3, 3, allow_small_fd=False, result={})
        refused = False
    except ValueError:
        refused = True
    return Check("small_set_refused", refused, f"FD on 3 vs 3 clips {'refused' if refused else 'NOT refused'} "
                 f"(minimum {MIN_FD_CLIPS}; --allow-small-fd overrides)")


def clap_checks(clap, sample_rate: int | None = None) -> list[Check]:
    """A sine matches "a pure tone" better than "a dog barking"; very different clips do not collapse."""
    sr = sample_rate or clap.sample_rate
    t = torch.arange(2 * sr) / sr
    sine = 0.3 * torch.sin(2 * math.pi * 440.0 * t)
    tone, dog = clap.clap_scores([sine, sine], ["a pure tone", "a dog barking"]).tolist()
    g = torch.Generator().manual_seed(0)
    probes = [sine, 0.1 * torch.randn(t.shape, generator=g), (torch.rand(t.shape, generator=g) < 1e-3).float() * 0.5,
              0.2 * (torch.sin(2 * math.pi * 110.0 * t) + torch.sin(2 * math.pi * 164.8 * t))]
    emb = clap.embed_audio(probes)  # (4, D) unit norm
    cos = emb @ emb.T
    off_diag = cos[~torch.eye(len(probes), dtype=torch.bool)]
    worst = float(off_diag.min())
    zero = bool((emb.norm(dim=-1) < 1e-6).all())  # normalising a zero projection leaves zeros: collapsed too
    return [
        Check("clap_tone", tone > dog, f"CLAP(sine 440 Hz, 'a pure tone') = {tone:.3f} vs 'a dog barking' = {dog:.3f}"),
        Check("clap_not_collapsed", worst < COLLAPSE_COSINE and not zero,
              f"lowest cosine between sine, noise, clicks and a chord = {worst:.4f}{' (all-zero embeddings)' * zero}"
              f" (collapsed if all > "
              f"{COLLAPSE_COSINE}: every input maps to one embedding, the checkpoint is broken)"),
    ]


def run_checks(backend: str = "mel-stats", clap: str | None = None, device: str | None = None) -> list[Check]:
    """All checks for an FD backend (and a CLAP checkpoint if given)."""
    from genflow.metrics.clap import load_clap
    from genflow.metrics.embeddings import load_backend

    be = load_backend(backend, device)
    checks = distance_checks(be, synthetic_clips(sample_rate=be.sample_rate))
    checks.append(small_set_check())
    if clap is not None:
        checks += clap_checks(load_clap(clap, device))
    return checks


def main(argv: list[str] | None = None) -> int:
    """``check``: print one line per check; exit status 1 when any fails."""
    p = argparse.ArgumentParser(prog="python -m genflow.metrics check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="mel-stats", help="FD/KAD embedding: mel-stats|vggish:file|panns:file|clap")
    p.add_argument("--clap", default=None, help="CLAP folder or hub id to check (tone vs dog, collapse)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    checks = run_checks(args.backend, args.clap, args.device)
    for c in checks:
        print(f"{'PASS' if c.passed else 'FAIL'}  {c.name:20s} {c.detail}")
    failed = [c.name for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
