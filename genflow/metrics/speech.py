"""Speech-enhancement metrics at 16 kHz: SI-SDR, wide-band PESQ, STOI, ESTOI and DNSMOS.

PESQ comes from the ``pesq`` package (ITU-T P.862.2 wide-band), STOI/ESTOI from ``pystoi``, DNSMOS from
the ONNX models shipped inside the ``speechmos`` wheel (offline). All are optional dependencies
(``pip install genflow[eval]``); each raises an ImportError naming the package when it is missing.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

SE_SAMPLE_RATE = 16000


def align_pair(
    estimate: torch.Tensor, reference: torch.Tensor, name: str = "", tolerance: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim two 1-D signals to the shorter length; warn when they differ by more than ``tolerance``."""
    n_est, n_ref = estimate.shape[-1], reference.shape[-1]
    if abs(n_est - n_ref) > tolerance * max(n_est, n_ref, 1):
        warnings.warn(
            f"{name or 'pair'}: lengths differ by more than {tolerance:.0%} ({n_est} vs {n_ref} samples); "
            "trimmed to the shorter. Check that the files really belong together",
            stacklevel=2,
        )
    n = min(n_est, n_ref)
    return estimate[..., :n], reference[..., :n]


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB of (..., N) signals (zero-mean, optimal scaling of the reference)."""
    est = estimate.double() - estimate.double().mean(-1, keepdim=True)
    ref = reference.double() - reference.double().mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / ((ref * ref).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10(((target * target).sum(-1) + eps) / ((noise * noise).sum(-1) + eps))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy().reshape(-1)


def pesq_wb(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int = SE_SAMPLE_RATE) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.04..4.64) of 16 kHz 1-D signals; NaN when no speech is found."""
    try:
        from pesq import NoUtterancesError, pesq
    except ImportError as e:
        raise ImportError("PESQ needs the `pesq` package: pip install pesq (or genflow[eval])") from e
    if sample_rate != SE_SAMPLE_RATE:
        raise ValueError(f"wide-band PESQ takes 16000 Hz audio, got {sample_rate} Hz; resample first")
    try:
        return float(pesq(sample_rate, _np(reference), _np(estimate), "wb"))
    except NoUtterancesError:
        return float("nan")


def stoi(
    estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int = SE_SAMPLE_RATE, extended: bool = False
) -> float:
    """STOI (or ESTOI with ``extended=True``) in [0, 1] from ``pystoi``."""
    try:
        from pystoi import stoi as _stoi
    except ImportError as e:
        raise ImportError("STOI needs the `pystoi` package: pip install pystoi (or genflow[eval])") from e
    return float(_stoi(_np(reference), _np(estimate), sample_rate, extended=extended))


def dnsmos(audio: torch.Tensor, sample_rate: int = SE_SAMPLE_RATE) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 scores {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"} (1..5) + P.808."""
    try:
        from speechmos import dnsmos as _dnsmos
    except ImportError as e:
        raise ImportError(
            "DNSMOS needs `speechmos` with `onnxruntime` and `librosa`: pip install speechmos onnxruntime "
            "librosa (or genflow[eval])"
        ) from e
    if sample_rate != SE_SAMPLE_RATE:
        raise ValueError(f"DNSMOS takes 16000 Hz audio, got {sample_rate} Hz; resample first")
    x = _np(audio).astype(np.float32)
    peak = float(np.abs(x).max(initial=0.0))
    if peak > 1.0:  # speechmos refuses values outside [-1, 1]; scale down instead of clipping
        x = x / peak
    out = _dnsmos.run(x, sample_rate)
    return {
        "dnsmos_sig": float(out["sig_mos"]),
        "dnsmos_bak": float(out["bak_mos"]),
        "dnsmos_ovrl": float(out["ovrl_mos"]),
        "dnsmos_p808": float(out["p808_mos"]),
    }


def speech_metrics(
    estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int = SE_SAMPLE_RATE,
    with_dnsmos: bool = True, name: str = "",
) -> dict[str, float]:
    """All SE metrics of one 1-D pair at 16 kHz (resampled if needed; trimmed to the shorter length)."""
    if sample_rate != SE_SAMPLE_RATE:
        from genflow.audio import resample

        estimate = resample(estimate, sample_rate, SE_SAMPLE_RATE)
        reference = resample(reference, sample_rate, SE_SAMPLE_RATE)
    est, ref = align_pair(estimate.reshape(-1), reference.reshape(-1), name=name)
    out = {
        "si_sdr": float(si_sdr(est, ref)),
        "pesq_wb": pesq_wb(est, ref),
        "stoi": stoi(est, ref),
        "estoi": stoi(est, ref, extended=True),
    }
    if with_dnsmos:
        out.update(dnsmos(est))
    return out
