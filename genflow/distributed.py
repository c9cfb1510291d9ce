"""Small collective helpers that work alike on one process, gloo (CPU) and NCCL (GPU), without pickles.

``gather_json`` is ``all_gather_object`` through JSON bytes in a uint8 tensor: what crosses between
processes is text, never a pickle. ``deal`` spreads weighted work (e.g. seconds of audio) over processes.
"""

from __future__ import annotations

import heapq
import json

import torch


def gather_json(obj, state=None) -> list:
    """[obj of process 0, obj of process 1, ...] on every process; ``obj`` must be JSON-serialisable.

    ``state``: an Accelerate ``PartialState``/``Accelerator`` (None or one process: ``[obj]``).
    """
    if state is None or state.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    device = state.device if dist.get_backend() == "nccl" else torch.device("cpu")
    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8).to(device)
    size = torch.tensor([data.numel()], device=device)
    sizes = [torch.zeros_like(size) for _ in range(state.num_processes)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    parts = [torch.empty_like(padded) for _ in range(state.num_processes)]
    dist.all_gather(parts, padded)
    return [json.loads(bytes(p[: int(s.item())].cpu().tolist()).decode()) for p, s in zip(parts, sizes)]


def deal(weights: list[float], num_processes: int) -> list[list[int]]:
    """Indices of ``weights`` dealt to ``num_processes`` so their sums are close (largest first, to the lightest).

    Deterministic (ties by index), so every process computes the same plan on its own.
    """
    plan: list[list[int]] = [[] for _ in range(num_processes)]
    loads = [(0.0, rank) for rank in range(num_processes)]
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, rank = heapq.heappop(loads)
        plan[rank].append(i)
        heapq.heappush(loads, (load + weights[i], rank))
    return [sorted(p) for p in plan]
