"""Kernel Audio Distance (Chung et al. 2025, "KAD: No More FAD!"), as kadtk defines it.

KAD = 100 * MMD^2_u(ref, gen): the unbiased squared maximum mean discrepancy with a Gaussian RBF kernel
k(a, b) = exp(-|a - b|^2 / (2 h^2 + 1e-8)), where the bandwidth h is the median pairwise Euclidean
distance within the *reference* set (``torch.median``: the lower middle value for an even count):

    MMD^2_u = mean_{i != j} k(r_i, r_j) + mean_{i != j} k(g_i, g_j) - 2 mean_{i, j} k(r_i, g_j)

Unlike FD it makes no Gaussian assumption, is unbiased (its expectation does not grow as the sets
shrink) and can be slightly negative for two samples of one distribution. kadtk computes it in float32
on the GPU; genflow in float64, in blocks so that 10^4 embeddings need no 10^8-entry matrix.
"""

from __future__ import annotations

import numpy as np
import torch

KAD_SCALE = 100.0  # kadtk's SCALE_FACTOR
KAD_EPS = 1e-8  # kadtk's eps in gamma = 1 / (2 h^2 + eps)
_BLOCK = 2048


def median_pairwise_distance(x: np.ndarray | torch.Tensor) -> float:
    """Median Euclidean distance over the pairs i < j of the (N, D) set (lower median, as torch.median)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"got embeddings of shape {tuple(x.shape)}; expected (N, D) with N >= 2 for a bandwidth")
    return float(torch.median(torch.pdist(x)))


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, gamma: float, same: bool) -> float:
    """sum_{i, j} exp(-gamma |a_i - b_j|^2), without the diagonal when ``same`` (a is b)."""
    total = 0.0
    for i in range(0, a.shape[0], _BLOCK):
        d2 = torch.cdist(a[i : i + _BLOCK], b).pow(2)  # (block, M)
        k = torch.exp(-gamma * d2)
        if same:
            rows = torch.arange(k.shape[0])
            k[rows, rows + i] = 0.0
        total += float(k.sum())
    return total


def kernel_audio_distance(
    gen: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, bandwidth: float | None = None
) -> float:
    """KAD between (N, D) generated and (M, D) reference embeddings (x100, as kadtk reports it)."""
    g = torch.as_tensor(np.asarray(gen), dtype=torch.float64)
    r = torch.as_tensor(np.asarray(ref), dtype=torch.float64)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1] or min(g.shape[0], r.shape[0]) < 2:
        raise ValueError(f"got generated embeddings {tuple(g.shape)} and reference {tuple(r.shape)}; expected "
                         "(N, D) and (M, D) from the same backend with N, M >= 2")
    h = median_pairwise_distance(r) if bandwidth is None else float(bandwidth)
    gamma = 1.0 / (2.0 * h * h + KAD_EPS)
    n, m = g.shape[0], r.shape[0]
    k_rr = _kernel_sum(r, r, gamma, same=True) / (m * (m - 1))
    k_gg = _kernel_sum(g, g, gamma, same=True) / (n * (n - 1))
    k_rg = _kernel_sum(r, g, gamma, same=False) / (m * n)
    return KAD_SCALE * (k_rr + k_gg - 2.0 * k_rg)
