"""The codec CLI: reconstruct a file, keep its sample rate, print timings; fail cleanly on bad input."""

import os
import re
import subprocess
import sys

from genflow.audio import audio_info, load_audio, save_audio
from genflow.cli.codec import main

SPEECH = os.path.join(os.path.dirname(__file__), "fixtures", "audio", "speech.wav")


def test_reconstruct_keeps_input_rate_and_prints_rtf(tmp_path, capsys):
    wav, _ = load_audio(SPEECH, 22050)
    src = tmp_path / "speech22k.flac"
    save_audio(src, wav, 22050)
    out = tmp_path / "out" / "rec.wav"
    assert main(["reconstruct", str(src), str(out), "--codec", "mel:griffin_lim_iters=8", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    info = audio_info(out)
    assert info.sample_rate == 22050 and info.channels == 1
    # the codec drops the last partial 40 ms hop: the output is at most one hop shorter than the input
    assert 0 <= audio_info(src).duration - info.duration < 0.04 + 1e-3
    assert re.search(r"^RTF \d+\.\d+ \(processing s / audio s", printed, re.M), printed
    assert re.search(r"encode \d+\.\d+ s, decode \d+\.\d+ s", printed) and "3.17 s" in printed
    rec, _ = load_audio(out)
    assert rec.abs().max() > 0.05  # not silence


def test_bad_input_exits_2_with_message(tmp_path, capsys):
    assert main(["reconstruct", str(tmp_path / "missing.wav"), str(tmp_path / "o.wav")]) == 2
    assert "missing.wav" in capsys.readouterr().err
    assert main(["reconstruct", SPEECH, str(tmp_path / "o.wav"), "--codec", "nonsense"]) == 2
    assert "Valid forms" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_module_entry_point(tmp_path):
    out = tmp_path / "rec.flac"
    proc = subprocess.run(
        [sys.executable, "-m", "genflow.codecs", "reconstruct", SPEECH, str(out), "--codec", "mel:griffin_lim_iters=2"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "RTF" in proc.stdout and audio_info(out).sample_rate == 16000
