"""First offline quality benchmark: train the demo presets for a fixed budget, score them on the held-out split.

    python bench/demo_quality.py --steps 1500 --out runs/quality              # all three recipes (hours on CPU)
    python bench/demo_quality.py --recipes se --steps 1500 --out runs/quality # one recipe
    python bench/demo_quality.py --recipes tta,ttm,se --preset tiny --steps 2 --limit 2 --no-dnsmos \
        --out /tmp/q                                                           # smoke run, under a minute

Each recipe's real ``recipes/X/train.py`` runs in a subprocess (``--resume latest``: an interrupted run
continues; a run already at ``--steps`` with a release is reused as it is) into ``--runs-dir``/X, then
its release is loaded with ``genflow.load`` and scored on ``data/demo/X/test.jsonl``:

- TTA: one clip per test caption (seed 0, the release's default sampler settings, the test clips'
  length). A probe (``genflow.metrics.probe``) trained on the real train split's labels classifies the
  generated clips, the real test clips (the ceiling) and the test clips through the codec (what the
  codec allows). Fréchet distance in the probe's embedding space against the real test clips:
  generated, and codec round trips (the floor a perfect generator on this codec would reach).
- TTM: the same for the test captions; tempo (acc1 within 4 %, acc2 also at 2x/0.5x) and key (exact,
  MIREX-weighted) from ``genflow.metrics.music``, instrument accuracy by a probe trained on the train
  split's instruments; real test clips are the ceiling of the estimators themselves.
- SE: the noisy test clips enhanced; PESQ-wb, STOI, ESTOI, SI-SDR and DNSMOS (``genflow.metrics.speech``)
  of the noisy input, the enhanced output and the clean clip through the codec (the codec's ceiling).

Writes ``--out``/results.json (with per-clip values) and ``--out``/results.md (the tables), and the
generated/enhanced audio under ``--out``/audio/X/. Probes are cached in ``--out``/probe-X/. Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

import genflow
from genflow.audio import load_audio, resample, save_audio
from genflow.metrics.frechet import compute_stats, frechet_distance_stats
from genflow.metrics.music import music_scores
from genflow.metrics.probe import AudioProbe, fit_probe
from genflow.metrics.report import markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "demo"
SR = 16000  # every metric here works at 16 kHz
LABEL_KEY = {"tta": "label", "ttm": "instrument"}


def read_rows(manifest: Path) -> list[dict]:
    """JSONL rows with their audio paths made absolute (paths in the manifests are relative to them)."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for row in rows:
        for key in ("audio", "clean", "noisy"):
            if key in row:
                row[key] = str(manifest.parent / row[key])
    return rows


def load_clips(paths: list[str]) -> list[torch.Tensor]:
    """Files -> (N,) float32 waveforms at 16 kHz."""
    return [load_audio(p, SR)[0] for p in paths]


def train_release(recipe: str, args: argparse.Namespace) -> tuple[Path, float]:
    """Train (or continue, or reuse) ``--runs-dir``/RECIPE to ``--steps``; returns (release folder, seconds)."""
    run = Path(args.runs_dir) / recipe
    release = run / "release"
    done = run / "checkpoints" / f"checkpoint-{args.steps}" / "genflow_state.json"
    if (release / "pipeline.json").is_file() and done.is_file():
        print(f"[{recipe}] reusing {release} (already trained to {args.steps} steps)", flush=True)
        return release, 0.0
    cmd = [sys.executable, str(ROOT / "recipes" / recipe / "train.py"), "--preset", args.preset, "--out", str(run),
           "--max-steps", str(args.steps), "--train.log_with", "none", "--resume", "latest", *args.train_args]
    print(f"[{recipe}] training: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return release, time.perf_counter() - start


def get_probe(recipe: str, out: Path) -> AudioProbe:
    """The probe of ``recipe``'s train-split labels: loaded from ``out``/probe-RECIPE or trained and saved there."""
    folder = out / f"probe-{recipe}"
    rows = read_rows(DATA / recipe / "train.jsonl")
    labels = [r[LABEL_KEY[recipe]] for r in rows]
    if (folder / "model.safetensors").is_file():
        probe = AudioProbe.load(folder)
        if probe.labels == sorted(set(labels)):
            return probe
    start = time.perf_counter()
    probe = fit_probe(load_clips([r["audio"] for r in rows]), labels)
    print(f"[{recipe}] probe trained on {len(rows)} clips in {time.perf_counter() - start:.1f} s", flush=True)
    probe.save(folder)
    return probe


@torch.inference_mode()
def codec_roundtrip(codec, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
    """16 kHz clips -> encode -> decode -> 16 kHz clips of the input lengths (zero-padded if shorter)."""
    out = []
    for wav in wavs:
        x = resample(wav, SR, codec.sample_rate) if codec.sample_rate != SR else wav
        y = codec.decode(codec.encode(x[None].to(codec_device(codec))))[0].float().cpu()
        y = resample(y, codec.sample_rate, SR) if codec.sample_rate != SR else y
        out.append(torch.nn.functional.pad(y, (0, max(0, wav.numel() - y.numel())))[: wav.numel()])
    return out


def codec_device(codec) -> torch.device:
    """Where the codec's tensors live (a weight-free codec may have only buffers)."""
    for t in (*codec.parameters(), *codec.buffers()):
        return t.device
    return torch.device("cpu")


def generate(gen, rows: list[dict], folder: Path, seed: int) -> tuple[list[torch.Tensor], float]:
    """One clip per test caption at the median test-clip length, saved to ``folder``; (16 kHz clips, seconds)."""
    durations = sorted(float(r.get("duration") or load_audio(r["audio"])[0].numel() / SR) for r in rows)
    duration = durations[len(durations) // 2]
    start = time.perf_counter()
    clips = gen.generate([r["caption"] for r in rows], duration_s=duration, seed=seed)
    seconds = time.perf_counter() - start
    clips = [resample(c, gen.sample_rate, SR) if gen.sample_rate != SR else c for c in clips]
    for row, clip in zip(rows, clips):
        save_audio(folder / f"{row['id']}.wav", clip, SR)
    return clips, seconds


def probe_rows(probe: AudioProbe, sets: dict[str, list[torch.Tensor]], labels: list[str],
               reference: str) -> dict[str, dict[str, float]]:
    """Probe accuracy of every set, and its Fréchet distance to ``sets[reference]`` in the probe's embedding."""
    emb = {name: probe.embed(wavs).double().numpy() for name, wavs in sets.items()}
    ref_stats = compute_stats(emb[reference], backend="probe")
    rows = {}
    for name, wavs in sets.items():
        rows[name] = {"probe_acc": probe.accuracy(wavs, labels),
                      "fd_probe": frechet_distance_stats(compute_stats(emb[name], backend="probe"), ref_stats)}
    return rows


def eval_tta(gen, rows: list[dict], args: argparse.Namespace, out: Path) -> dict:
    """Probe accuracy and probe-embedding FD of generated clips vs real test clips vs codec round trips."""
    probe = get_probe("tta", out)
    real = load_clips([r["audio"] for r in rows])
    generated, gen_s = generate(gen, rows, out / "audio" / "tta", args.seed)
    sets = {"real test (ceiling)": real, "codec round trip": codec_roundtrip(gen.codec, real), "generated": generated}
    table = probe_rows(probe, sets, [r["label"] for r in rows], "real test (ceiling)")
    return {"table": table, "n_test": len(rows), "n_labels": len(probe.labels), "generate_s": gen_s}


def eval_ttm(gen, rows: list[dict], args: argparse.Namespace, out: Path) -> dict:
    """Instrument (probe), tempo and key accuracy of generated clips vs real test clips vs codec round trips."""
    probe = get_probe("ttm", out)
    real = load_clips([r["audio"] for r in rows])
    generated, gen_s = generate(gen, rows, out / "audio" / "ttm", args.seed)
    sets = {"real test (ceiling)": real, "codec round trip": codec_roundtrip(gen.codec, real), "generated": generated}
    table = probe_rows(probe, sets, [r["instrument"] for r in rows], "real test (ceiling)")
    per_clip = {}
    for name, wavs in sets.items():
        scores = music_scores(wavs, SR, [r["tempo"] for r in rows], [r["key"] for r in rows])
        per_clip[name] = [{"id": r["id"], **c} for r, c in zip(rows, scores.pop("per_clip"))]
        table[name] = {"instrument_acc": table[name].pop("probe_acc"), **scores,
                       "fd_probe": table[name].pop("fd_probe")}
    return {"table": table, "n_test": len(rows), "generate_s": gen_s, "per_clip": per_clip}


GENFLOW_SE = "genflow SE demo"
CODEC_SE = "codec ceiling (clean)"


def reference_enhancers() -> tuple[dict, dict[str, str]]:
    """The real enhancers of ``bench/se_enhancers.py`` that are installed, and why the others are missing."""
    spec = importlib.util.spec_from_file_location("se_enhancers", Path(__file__).with_name("se_enhancers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    status = module.available()
    for name, why in status.items():
        if why:
            print(f"[se] {name}: {why}; its row is left out", flush=True)
    return {n: fn for n, fn in module.ENHANCERS.items() if not status[n]}, {n: w for n, w in status.items() if w}


def reference_sets(gen, rows: list[dict], clean: list, noisy: list, args: argparse.Namespace,
                   out: Path) -> tuple[dict[str, list[dict]], dict[str, str], dict[str, float]]:
    """Per-clip metrics of the noisy input, the codec round trip and the real enhancers (cached in ``out``).

    They do not depend on the genflow model, so ``OUT/se_references.json`` keeps them for the next run on the same
    test rows, codec and metric settings. Returns (per-clip metrics by system, missing enhancers, seconds per clip).
    """
    from genflow.metrics.speech import speech_metrics

    enhancers, missing = reference_enhancers()
    key = {"ids": [r["id"] for r in rows], "dnsmos": not args.no_dnsmos, "enhancers": sorted(enhancers),
           "codec": json.dumps(getattr(getattr(gen.codec, "config", None), "__dict__", repr(gen.codec)),
                               sort_keys=True, default=str)}
    cache = out / "se_references.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            print(f"[se] reusing {cache}", flush=True)
            return saved["per_clip"], missing, saved["seconds"]
    sets, seconds = {"noisy input": noisy, CODEC_SE: codec_roundtrip(gen.codec, clean)}, {}
    for name, fn in enhancers.items():
        start = time.perf_counter()
        sets[name] = [torch.from_numpy(fn(x.numpy())) for x in noisy]
        seconds[name] = (time.perf_counter() - start) / len(noisy)
        for row, wav in zip(rows, sets[name]):
            save_audio(out / "audio" / "se-references" / name.split()[0] / f"{row['id']}.wav", wav, SR)
    per_clip = {name: [speech_metrics(w, c, SR, with_dnsmos=not args.no_dnsmos, name=r["id"])
                       for w, c, r in zip(wavs, clean, rows)] for name, wavs in sets.items()}
    cache.write_text(json.dumps({"key": key, "per_clip": per_clip, "seconds": seconds}))
    return per_clip, missing, seconds


def eval_se(gen, rows: list[dict], args: argparse.Namespace, out: Path) -> dict:
    """PESQ-wb/STOI/ESTOI/SI-SDR/DNSMOS of the noisy input, the codec's round trip, genflow and real enhancers."""
    from genflow.metrics.speech import speech_metrics

    clean, noisy = load_clips([r["clean"] for r in rows]), load_clips([r["noisy"] for r in rows])
    per_clip, missing, seconds = reference_sets(gen, rows, clean, noisy, args, out)
    start = time.perf_counter()
    enhanced = [gen.enhance(x, SR, seed=args.seed) for x in noisy]
    enh_s = time.perf_counter() - start
    seconds[GENFLOW_SE] = enh_s / len(noisy)
    for row, wav in zip(rows, enhanced):
        save_audio(out / "audio" / "se" / f"{row['id']}.wav", wav, SR)
    per_clip[GENFLOW_SE] = [speech_metrics(w, c, SR, with_dnsmos=not args.no_dnsmos, name=r["id"])
                            for w, c, r in zip(enhanced, clean, rows)]
    order = ["noisy input", CODEC_SE, GENFLOW_SE, *(n for n in per_clip if n not in ("noisy input", CODEC_SE,
                                                                                      GENFLOW_SE))]
    per_clip = {name: per_clip[name] for name in order}
    table = {name: nanmean(clips) for name, clips in per_clip.items()}
    by_snr, by_speaker = {}, {}
    for snr in sorted({r["snr_db"] for r in rows}):
        by_snr[f"{snr:g} dB"] = group_means(per_clip, [i for i, r in enumerate(rows) if r["snr_db"] == snr])
    groups = {"Allison (unseen prompts)": lambda r: r.get("speaker", "asterisk/allison") == "asterisk/allison",
              "held-out speakers": lambda r: r.get("speaker", "asterisk/allison") != "asterisk/allison"}
    for name, pick in groups.items():
        idx = [i for i, r in enumerate(rows) if pick(r)]
        if idx:
            by_speaker[f"{name} ({len(idx)})"] = group_means(per_clip, idx)
    per_clip = {name: [{"id": r["id"], "snr_db": r["snr_db"], **m} for r, m in zip(rows, clips)]
                for name, clips in per_clip.items()}
    return {"table": table, "by_snr": by_snr, "by_speaker": by_speaker, "missing": missing, "n_test": len(rows),
            "enhance_s": enh_s, "seconds_per_clip": seconds, "per_clip": per_clip}


def group_means(per_clip: dict[str, list[dict]], idx: list[int]) -> dict[str, float]:
    """PESQ-wb and ESTOI of every system over the clips ``idx``: {"pesq_wb SYSTEM": mean, "estoi SYSTEM": mean}."""
    short = {"noisy input": "noisy", CODEC_SE: "codec", GENFLOW_SE: "genflow"}
    out = {}
    for key in ("pesq_wb", "estoi"):
        for name, clips in per_clip.items():
            out[f"{key} {short.get(name, name.split()[0])}"] = nanmean([clips[i] for i in idx])[key]
    return out


def nanmean(dicts: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean ignoring NaN (PESQ gives NaN when it finds no speech)."""
    out = {}
    for key in dicts[0]:
        vals = [d[key] for d in dicts if math.isfinite(d[key])]
        out[key] = sum(vals) / len(vals) if vals else float("nan")
    return out


EVALUATE = {"tta": eval_tta, "ttm": eval_ttm, "se": eval_se}
TITLES = {"tta": "TTA (probe accuracy on the 32 labels; FD in the probe's embedding vs the real test clips)",
          "ttm": "TTM (instrument by probe; tempo acc1 within 4 %, acc2 also 2x/0.5x; key exact / MIREX-weighted)",
          "se": "SE (16 kHz; PESQ wide-band, SI-SDR in dB, DNSMOS P.835)"}


def render(results: dict) -> str:
    """The markdown report: one table per recipe (+ SE by SNR)."""
    lines = [f"Demo quality benchmark: preset `{results['preset']}`, {results['steps']} steps per recipe, "
             f"seed {results['seed']}.", ""]
    for recipe, res in results["recipes"].items():
        lines += [f"### {TITLES[recipe]}", "",
                  f"{res['n_test']} test clips; training {res['train_s']:.0f} s, evaluation {res['eval_s']:.0f} s.",
                  "", markdown_table(res["table"], digits=3), ""]
        for name, why in res.get("missing", {}).items():
            lines += [f"- {name}: {why}; no row.", ""]
        if "by_snr" in res:
            lines += ["PESQ-wb and ESTOI by input SNR:", "", markdown_table(res["by_snr"], digits=3), ""]
        if res.get("by_speaker"):
            lines += ["PESQ-wb and ESTOI by speaker group:", "", markdown_table(res["by_speaker"], digits=3), ""]
        if "seconds_per_clip" in res:
            lines += ["Seconds per clip (CPU, 1 thread): " + ", ".join(
                f"{k} {v:.2f}" for k, v in res["seconds_per_clip"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, train/reuse each recipe's release, evaluate it, write results.json and results.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--recipes", default="tta,ttm,se", help="comma-separated subset of tta,ttm,se")
    p.add_argument("--steps", type=int, default=1500, help="training steps per recipe")
    p.add_argument("--preset", default="demo", help="training preset (demo; tiny for smoke runs)")
    p.add_argument("--runs-dir", default="runs/quality", help="run folders go to RUNS_DIR/{tta,ttm,se}")
    p.add_argument("--out", default="runs/quality/report", help="folder for results.json, results.md, audio, probes")
    p.add_argument("--limit", type=int, default=0, help="score only the first N test rows (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (SE)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for evaluation (training subprocesses keep their own); 1 is the safe "
                        "choice on a shared CPU, where small ops on 2+ threads can run 10-100x slower")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                   help="everything after this flag goes to train.py (e.g. --train-args --train.lr 1e-3)")
    args = p.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = sorted(set(recipes) - set(EVALUATE))
    if unknown or not recipes:
        raise ValueError(f"--recipes {args.recipes!r}: unknown {unknown}; choose from tta, ttm, se")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: expected a positive number of training steps")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = {"preset": args.preset, "steps": args.steps, "seed": args.seed, "recipes": {}}
    for recipe in recipes:
        release, train_s = train_release(recipe, args)
        start = time.perf_counter()
        gen = genflow.load(release, device="cpu")
        rows = read_rows(DATA / recipe / "test.jsonl")
        rows = rows[: args.limit] if args.limit else rows
        res = EVALUATE[recipe](gen, rows, args, out)
        res.update(release=str(release), train_s=train_s, eval_s=time.perf_counter() - start,
                   sampling=gen.settings.to_dict())
        results["recipes"][recipe] = res
        print(f"\n### {recipe}\n{markdown_table(res['table'], digits=3)}\n", flush=True)
        write_json(out / "results.json", results)  # after every recipe, so a long run leaves partial results
    report = render(results)
    (out / "results.md").write_text(report + "\n")
    print(report)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return results


if __name__ == "__main__":
    main()
