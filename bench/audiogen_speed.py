"""The official Dasheng-AudioGen generator at its released size (random weights): sampling speed, load memory.

    python bench/audiogen_speed.py speed                       # 10 s clip, official defaults; CPU fp32
    python bench/audiogen_speed.py speed --device cuda         # GPU, bf16 weights
    python bench/audiogen_speed.py load-memory --dtype bf16    # peak host memory of load_official

``speed``: the released configuration built on the meta device and materialised once with random weights;
one 10 s clip (250 latent frames) with the official defaults (Euler, 25 steps, sway -1, guidance 5, both
halves in one forward of batch 2), T5 states stood in by random (1, 20, 1024). The backbone (what the
steps cost) is timed; on a CPU ``--timed-steps`` steps after one warm-up step are timed and scaled to 25
(a full run takes minutes there). ``load-memory``: writes an official-layout folder (config.json +
model.safetensors, random weights, official key names) of the released size once to ``--folder``, then
loads it with ``genflow.audiogen.load_official`` in a fresh process and prints its peak RSS. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

from genflow.audiogen import AudioGen, load_official, official_sigmas
from genflow.audiogen.config import from_official
from genflow.flow import sample

RELEASED = {  # the released config.json of mispeech/Dasheng-AudioGen (the fields that set sizes and modes)
    "model_type": "dasheng_audiogen", "text_encoder_name": "google/flan-t5-large",
    "tokenizer_name": "mispeech/dashengtokenizer", "use_zero_instruction": False, "instruction_seq_len": 14,
    "task_instruction_dim": 1024, "sample_rate": 16000, "downsampling_ratio": 640, "latent_dim": 1280,
    "content_dim": 1024, "duration_offset": 1.0, "dit_patch_size": 1, "dit_in_chans": 1280, "dit_out_chans": 1280,
    "dit_input_type": "1d", "dit_embed_dim": 1536, "dit_depth": 32, "dit_num_heads": 24, "dit_mlp_ratio": 4.0,
    "dit_qk_norm": "layernorm", "dit_norm_layer": "layernorm", "dit_act_layer": "geglu", "dit_context_norm": True,
    "dit_time_fusion": "ada", "dit_ta_context_dim": 1024, "dit_ta_context_fusion": "add",
    "dit_ta_context_norm": True, "dit_context_dim": 1024, "dit_context_fusion": "cross",
    "dit_context_pe_method": "none", "dit_pe_method": "none", "dit_rope_mode": "shared", "adapter_num_heads": 16,
    "adapter_dropout": 0.2, "duration_predictor_filter_channels": 512, "duration_predictor_n_layers": 5,
    "duration_predictor_kernel_size": 3, "special_tokens": [],
}


def random_model(device: str, dtype: torch.dtype) -> AudioGen:
    """The released size, allocated once on ``device`` (meta init, then filled in place)."""
    with torch.device("meta"):
        model = AudioGen(from_official(RELEASED))
    model = model.to_empty(device=device).to(dtype)
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("null_text") or name.endswith("null_aligned"):
                t.zero_()
            elif t.ndim == 1 and "norm" in name and name.endswith("weight"):
                t.fill_(1.0)
            else:  # small values: no overflow or denormals to distort the timing
                t.copy_(torch.randn(t.shape, generator=g).mul_(0.02))
    return model.eval()


def speed(args) -> None:
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = random_model(args.device, dtype)
    n = sum(p.numel() for p in model.parameters())
    frames = round(10.0 * model.config.frame_rate)
    text = torch.randn(1, 20, model.config.text_dim, device=device)
    noise = torch.randn(1, frames, model.config.backbone.latent_dim, device=device)
    sigmas = official_sigmas(25, -1.0)
    steps = 25 if device.type == "cuda" else args.timed_steps

    def run(k: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample(model, noise, sigmas[: k + 1], guidance_scale=5.0, text=text)  # k steps of the official loop
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    with torch.inference_mode():
        run(1)  # warm-up
        t = run(steps)
    per_step = t / steps
    print(f"AudioGen released size: {n / 1e9:.3f} B parameters, {device.type} {str(dtype)[6:]}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"10 s clip ({frames} frames), guidance 5 (batch 2): {per_step:.3f} s per step, "
          f"{25 * per_step:.1f} s for 25 steps{'' if steps == 25 else f' (timed {steps}, scaled)'}, "
          f"RTF {25 * per_step / 10:.3f}")
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def official_layout(cfg: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Official key -> (shape, "F"|"I64") of a Dasheng-AudioGen state dict for ``cfg`` (checked on the fixture)."""
    d, D, C, heads = cfg["dit_embed_dim"], cfg["content_dim"], cfg["latent_dim"], cfg["dit_num_heads"]
    hd, inner, F = d // heads, int(d * cfg["dit_mlp_ratio"]), cfg["duration_predictor_filter_channels"]
    out: dict[str, tuple[tuple[int, ...], str]] = {}

    def lin(key, o, i, bias=True):
        out[f"{key}.weight"] = ((o, i), "F")
        if bias:
            out[f"{key}.bias"] = ((o,), "F")

    def norm(key, n):
        out[f"{key}.weight"], out[f"{key}.bias"] = ((n,), "F"), ((n,), "F")

    n = cfg["dit_depth"] // 2
    blocks = [f"in_blocks.{i}" for i in range(n)] + ["mid_block"] + [f"out_blocks.{i}" for i in range(n)]
    for b in blocks:
        p = f"backbone.{b}"
        for nm in ("norm1", "norm2", "norm3", "norm_context"):
            norm(f"{p}.{nm}", d)
        for a in ("attn", "cross_attn"):
            for x in "qkv":
                lin(f"{p}.{a}.to_{x}", d, d, bias=False)
            norm(f"{p}.{a}.norm_q", hd), norm(f"{p}.{a}.norm_k", hd), lin(f"{p}.{a}.proj", d, d)
        out[f"{p}.attn.rotary.inv_freq"] = ((hd // 2,), "F32")
        lin(f"{p}.mlp.net.0.proj", 2 * inner, d), lin(f"{p}.mlp.net.2", d, inner), lin(f"{p}.adaln.time_ada", 6 * d, d)
        norm(f"{p}.ta_context_norm", D), lin(f"{p}.ta_context_projection", d, D, bias=False)
        if b.startswith("out"):
            norm(f"{p}.skip_norm", 2 * d), lin(f"{p}.skip_linear", d, 2 * d)
    lin("backbone.time_embed.mlp.0", d, 256), lin("backbone.time_embed.mlp.2", d, d)
    lin("backbone.time_ada_final", 2 * d, d)
    lin("backbone.context_embed.0", d, D), lin("backbone.context_embed.2", d, d)
    norm("backbone.final_block.norm", d), lin("backbone.final_block.linear", C, d)
    out["backbone.patch_embed.proj.weight"], out["backbone.patch_embed.proj.bias"] = ((d, C, 1), "F"), ((d,), "F")
    out["backbone.final_block.final_layer.weight"] = ((C, C, 3), "F")
    out["backbone.final_block.final_layer.bias"] = ((C,), "F")
    out["content_adapter.attn.in_proj_weight"] = ((3 * D, D), "F")
    out["content_adapter.attn.in_proj_bias"] = ((3 * D,), "F")
    lin("content_adapter.attn.out_proj", D, D), norm("content_adapter.norm", D)
    out["content_adapter.content_proj.weight"], out["content_adapter.content_proj.bias"] = ((D, D, 1), "F"), ((D,), "F")
    lin("content_adapter.global_duration_mlp.0", D, D), lin("content_adapter.global_duration_mlp.3", 1, D)
    for i in range(cfg["duration_predictor_n_layers"]):
        k = cfg["duration_predictor_kernel_size"]
        out[f"content_adapter.duration_predictor.conv.{i}.1.weight"] = ((F, D if i == 0 else F, k), "F")
        out[f"content_adapter.duration_predictor.conv.{i}.1.bias"] = ((F,), "F")
        norm(f"content_adapter.duration_predictor.conv.{i}.3", F)
    lin("content_adapter.duration_predictor.linear", 1, F), lin("content_encoder.text_encoder.proj", D, D)
    out["dummy_nta_embed"], out["dummy_ta_embed"], out["dummy_param"] = ((D,), "F"), ((D,), "F"), ((0,), "F32")
    out["instruction_embedding"] = ((1, cfg["instruction_seq_len"], cfg["task_instruction_dim"]), "F")
    out["instruction_lengths"] = ((1,), "I64")
    return out


def write_official(folder: Path, cfg: dict, dtype: str) -> Path:
    """Stream a random-weight official folder (``dtype`` "F32" | "BF16" floats) to disk, one tensor at a time."""
    from genflow.model import rope_frequencies

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    layout, header, offset = official_layout(cfg), {"__metadata__": {"format": "pt"}}, 0
    size = {"F32": 4, "BF16": 2, "I64": 8}
    for key, (shape, kind) in sorted(layout.items()):
        kind = dtype if kind == "F" else kind
        n = size[kind] * int(torch.Size(shape).numel())
        header[key] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    g = torch.Generator().manual_seed(0)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for key in sorted(layout):
            shape, kind = layout[key][0], header[key]["dtype"]
            if key.endswith("inv_freq"):
                t = rope_frequencies(2 * shape[0], 10000.0)
            elif key == "instruction_lengths":
                t = torch.full(shape, cfg["instruction_seq_len"], dtype=torch.int64)
            elif len(shape) == 1 and "norm" in key and key.endswith("weight"):
                t = torch.ones(shape)
            else:
                t = torch.randn(shape, generator=g).mul_(0.02)
            t = t.to({"F32": torch.float32, "BF16": torch.bfloat16, "I64": torch.int64}[kind]).contiguous()
            f.write((t.view(torch.int16) if kind == "BF16" else t).numpy().tobytes())
    return folder


def _rss() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    return {k: int(status.split(k + ":")[1].split()[0]) / 2**20 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def load_memory(args) -> None:
    folder = Path(args.folder)
    if not (folder / "model.safetensors").is_file():
        t0 = time.perf_counter()
        write_official(folder, RELEASED, args.file_dtype)
        print(f"wrote {folder} ({(folder / 'model.safetensors').stat().st_size / 2**30:.2f} GiB, "
              f"{args.file_dtype}) in {time.perf_counter() - t0:.0f} s")
    out = subprocess.run([sys.executable, __file__, "_load", str(folder), "--dtype", args.dtype],
                         capture_output=True, text=True, check=True)
    print(out.stdout.strip())


def _load(args) -> None:
    before = _rss()
    t0 = time.perf_counter()
    model = load_official(args.folder, dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype])
    seconds = time.perf_counter() - t0
    after = _rss()
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**30
    print(f"load_official -> {args.dtype}: {seconds:.1f} s; weights {weights:.2f} GiB; RSS before "
          f"{before['VmRSS']:.2f} GiB, after {after['VmRSS']:.2f} GiB (anonymous {after['RssAnon']:.2f}, "
          f"file-backed {after['RssFile']:.2f}), peak {after['VmHWM']:.2f} GiB "
          f"(ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("speed", help="seconds for a 10 s clip with the official defaults")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--timed-steps", type=int, default=2, help="CPU: steps timed (then scaled to 25)")
    m = sub.add_parser("load-memory", help="peak host memory of load_official at the released size")
    m.add_argument("--folder", default="/tmp/audiogen-released-random")
    m.add_argument("--file-dtype", default="F32", choices=["F32", "BF16"], help="dtype of the written weights")
    m.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="dtype to load into")
    ld = sub.add_parser("_load")
    ld.add_argument("folder")
    ld.add_argument("--dtype", default="fp32")
    c = sub.add_parser("check-layout", help="official_layout against an official folder (e.g. the test fixture)")
    c.add_argument("folder")
    args = parser.parse_args()
    if args.command == "check-layout":
        from safetensors import safe_open

        cfg = json.loads((Path(args.folder) / "config.json").read_text())
        with safe_open(str(Path(args.folder) / "model.safetensors"), "pt") as f:
            real = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        ours = {k: v[0] for k, v in official_layout(cfg).items()}
        print("layout matches" if ours == real else f"layout differs: {set(ours.items()) ^ set(real.items())}")
        return
    {"speed": speed, "load-memory": load_memory, "_load": _load}[args.command](args)


if __name__ == "__main__":
    main()
