"""How large is the time derivative MeanFlow's target takes from a flow checkpoint, at each scale?

    python bench/meanflow_dt.py --release runs/se-demo/release        # an SE release (its test pairs)

MeanFlow's target is ``v - (t - r) du/dt`` with ``du/dt = v . d_z u + d_t u``. At the start of fine-tuning u is
the flow model's velocity, so the target carries the checkpoint's own ``d_t v``. This prints, on 8 test pairs of
``data/demo/se`` at t = 0.9, 0.5, 0.1: the RMS of v, of the model's error against the sample velocity, of
``v . d_z u`` and of the exact ``d_t u`` (forward-mode JVP), then ``d_t u`` by central differences over +-h for h
from 1e-4 to 0.05 (``--train.fewstep.derivative_step``). A derivative that shrinks as h grows is a wiggle in t
finer than h (the ``1000 sigma`` sinusoidal timestep embedding): the exact JVP hands it to the target.
Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_quality as dq  # noqa: E402  (bench/ is a folder of scripts, not a package)

import genflow  # noqa: E402
from genflow.flow import interpolate, velocity_target  # noqa: E402

STEPS = (1e-4, 1e-3, 3e-3, 1e-2, 2e-2, 5e-2)


def rms(x: torch.Tensor) -> float:
    return x.pow(2).mean().sqrt().item()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--release", required=True, help="an SE release folder (aligned condition)")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seconds", type=float, default=1.5)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    gen = genflow.load(args.release, device="cpu")
    rows = dq.read_rows(dq.DATA / "se" / "test.jsonl")[: args.clips]
    n = int(args.seconds * dq.SR)
    clean, noisy = (torch.stack([c[:n] for c in dq.load_clips([r[key] for r in rows])]) for key in ("clean", "noisy"))
    x, _ = gen.conditioner.encode_audio(clean)
    aligned, _ = gen.conditioner.encode_audio(noisy)
    eps = gen.source.start(torch.randn_like(x), aligned)
    v = velocity_target(x, eps)
    model = gen.model.eval()

    def u(z, t):
        return model(z, t, aligned=aligned)

    print(f"{len(rows)} clips of {args.seconds} s; RMS over every latent value")
    print("| t | v | u - v | v . d_z u | d_t u (JVP) | " + " | ".join(f"d_t u, h={h:g}" for h in STEPS) + " |")
    print("|---" * (5 + len(STEPS)) + "|")
    for level in (0.9, 0.5, 0.1):
        t = torch.full((x.shape[0],), level)
        z = interpolate(x, eps, t)
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
            out, along_z = torch.func.jvp(u, (z, t), (v, torch.zeros_like(t)))
            _, along_t = torch.func.jvp(u, (z, t), (torch.zeros_like(v), torch.ones_like(t)))
            diffs = [rms((u(z, t + h) - u(z, t - h)) / (2 * h)) for h in STEPS]
        cells = [rms(v), rms(out - v), rms(along_z), rms(along_t), *diffs]
        print(f"| {level} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
