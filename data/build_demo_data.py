"""Build the offline demo dataset `data/demo/{tta,ttm,se}` from real recordings shipped by Debian packages.

Every clip is a real recording (or a real tune rendered with a real sampled soundfont), converted to
16 kHz mono 16-bit FLAC. The script is deterministic (fixed seeds, sorted inputs) and re-runnable: it
deletes and rewrites `data/demo/{tta,ttm,se}`, `data/demo/README.md` (measured counts, durations, sizes)
and `data/demo/LICENSE.md` (per-source attribution).

Install the sources, then run it from the repository root (about one minute on 2 CPU cores):

    apt-get install -y --no-install-recommends ffmpeg fluidsynth fluid-soundfont-gm abcmidi \
        sonic-pi-samples asterisk-core-sounds-en asterisk-core-sounds-en-g722 lincity-ng-data \
        klettres-data ktuberling-data espeak-ng
    pip install music21 soundfile soxr numpy
    python data/build_demo_data.py            # or: --out data/demo --only tta,ttm,se

Splits written:
  tta/  sonic-pi-samples (CC0) + LinCity-NG ambiences, captions and class labels hand-written from file
        names; train.jsonl / test.jsonl {"id", "audio", "caption", "label", "duration"}, ~15 % test per label.
  ttm/  Ryan's Mammoth Collection tunes (music21 ABC corpus) -> abc2midi -> fluidsynth FluidR3_GM at 16 kHz,
        one 6-8 s excerpt per tune with a chosen GM instrument and tempo; rows {"id", "audio", "caption",
        "instrument", "tempo", "key", "meter", "rhythm", "title", "duration"}.
  se/   Asterisk "Allison" prompts (clean speech, exact transcripts), many more voices (KLettres letters and
        KTuberling words, one speaker per language folder, joined into 2-3 s utterances; espeak-ng synthetic
        voices) + LinCity-NG / Sonic Pi / synthetic noises and hum. `pocketsphinx-testdata` and the sound files
        of `alsa-utils` are deliberately never read: they are kept for an outside check.
        Train: clean/*.flac + train.jsonl {"id", "clean", "transcript"}, noise/*.flac + noise_train.jsonl
        {"audio", "source"} (mix on the fly). Test: other prompts and other noise files, mixed at fixed SNRs:
        test/clean, test/noisy, test.jsonl {"id", "clean", "noisy", "snr_db", "transcript", "noise_source"}.
All paths in a manifest are relative to the manifest's folder.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16_000
SEED = 1234
SONIC_PI = Path("/usr/share/sonic-pi/samples")
SONIC_PI_COPYRIGHT = Path("/usr/share/doc/sonic-pi-samples/copyright")
LINCITY = Path("/usr/share/games/lincity-ng/sounds")
ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ALLISON_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
KLETTRES = Path("/usr/share/klettres")
KTUBERLING = Path("/usr/share/ktuberling/sounds")
# SE speakers (one per language folder of a package) the test split holds out: never heard in training.
SE_TEST_SPEAKERS = ("klettres/it", "klettres/pt_BR", "ktuberling/gl", "ktuberling/sl")
# espeak-ng voices (synthetic speech, training only) speaking Allison's training transcripts.
ESPEAK_VOICES = ("en-us", "en-us+f2", "en-gb-x-rp+m3", "en-029+f4", "en-gb-scotland+m1", "en+f3")
# Sonic Pi (CC0) noises: for training, and held out for the test split.
SE_SONIC_TRAIN = ("vinyl_hiss", "loop_3d_printer", "ambi_soft_buzz", "vinyl_scratch")
SE_SONIC_TEST = ("ambi_sauna", "ambi_haunted_hum")

# ---------------------------------------------------------------------------------------------------------
# Hand-written captions. Sonic Pi sample name -> (label, caption); the label is a coarse class for a
# classifier.
# Captions only claim what the sample's name (and its freesound source) says.
SONIC_PI_CAPTIONS: dict[str, tuple[str, str]] = {
    "ambi_choir": ("ambient", "an ambient choir pad"),
    "ambi_dark_woosh": ("whoosh", "a dark airy whoosh"),
    "ambi_drone": ("ambient", "a low ambient drone"),
    "ambi_glass_hum": ("ambient", "the sustained hum of a singing glass"),
    "ambi_glass_rub": ("ambient", "a finger rubbing the rim of a glass, making it ring"),
    "ambi_haunted_hum": ("ambient", "an eerie haunted humming drone"),
    "ambi_lunar_land": ("ambient", "a spacey science-fiction ambient texture"),
    "ambi_piano": ("ambient", "soft ambient piano notes with a long decay"),
    "ambi_sauna": ("ambient", "the quiet room tone of a sauna"),
    "ambi_soft_buzz": ("ambient", "a soft electric buzz"),
    "ambi_swoosh": ("whoosh", "a soft swoosh"),
    "bass_dnb_f": ("bass", "a drum and bass synth bass note in F"),
    "bass_drop_c": ("bass", "a synth bass note in C that drops in pitch"),
    "bass_hard_c": ("bass", "a hard synth bass note in C"),
    "bass_hit_c": ("bass", "a short synth bass hit in C"),
    "bass_thick_c": ("bass", "a thick synth bass note in C"),
    "bass_trance_c": ("bass", "a trance synth bass note in C"),
    "bass_voxy_c": ("bass", "a vocal-sounding synth bass note in C"),
    "bass_voxy_hit_c": ("bass", "a short vocal-sounding synth bass hit in C"),
    "bass_woodsy_c": ("bass", "a woody synth bass note in C"),
    "glitch_bass_g": ("bass", "a glitchy synth bass note in G"),
    "bd_808": ("kick", "an 808 kick drum hit"),
    "bd_ada": ("kick", "a short electronic kick drum"),
    "bd_boom": ("kick", "a booming kick drum with a long tail"),
    "bd_fat": ("kick", "a fat kick drum hit"),
    "bd_gas": ("kick", "a dry bass drum hit"),
    "bd_haus": ("kick", "a house music kick drum hit"),
    "bd_klub": ("kick", "a club music kick drum hit"),
    "bd_mehackit": ("kick", "an electronic kick drum hit"),
    "bd_pure": ("kick", "a clean, pure kick drum hit"),
    "bd_sone": ("kick", "a punchy kick drum hit"),
    "bd_tek": ("kick", "a techno kick drum hit"),
    "bd_zome": ("kick", "a deep kick drum hit"),
    "bd_zum": ("kick", "a short electronic kick drum"),
    "drum_bass_hard": ("kick", "a hard acoustic bass drum hit"),
    "drum_bass_soft": ("kick", "a soft acoustic bass drum hit"),
    "drum_heavy_kick": ("kick", "a heavy acoustic kick drum hit"),
    "elec_hollow_kick": ("kick", "a hollow electronic kick drum"),
    "elec_soft_kick": ("kick", "a soft electronic kick drum"),
    "sn_dolf": ("snare", "a snare drum hit"),
    "sn_dub": ("snare", "a dub-style snare drum hit"),
    "sn_generic": ("snare", "a generic snare drum hit"),
    "sn_zome": ("snare", "a crisp snare drum hit"),
    "drum_snare_hard": ("snare", "a hard acoustic snare drum hit"),
    "drum_snare_soft": ("snare", "a soft acoustic snare drum hit"),
    "elec_snare": ("snare", "an electronic snare drum"),
    "elec_hi_snare": ("snare", "a high-pitched electronic snare"),
    "elec_lo_snare": ("snare", "a low-pitched electronic snare"),
    "elec_mid_snare": ("snare", "a mid-pitched electronic snare"),
    "elec_filt_snare": ("snare", "a filtered electronic snare"),
    "drum_cymbal_closed": ("cymbal", "a closed hi-hat hit"),
    "drum_cymbal_open": ("cymbal", "an open hi-hat cymbal ringing"),
    "drum_cymbal_pedal": ("cymbal", "a pedal hi-hat chick"),
    "drum_cymbal_hard": ("cymbal", "a cymbal struck hard"),
    "drum_cymbal_soft": ("cymbal", "a cymbal struck softly"),
    "drum_splash_hard": ("cymbal", "a splash cymbal struck hard"),
    "drum_splash_soft": ("cymbal", "a splash cymbal struck softly"),
    "elec_cymbal": ("cymbal", "an electronic cymbal"),
    "perc_swash": ("cymbal", "a washy cymbal swash"),
    "drum_tom_hi_hard": ("tom", "a high tom drum struck hard"),
    "drum_tom_hi_soft": ("tom", "a high tom drum struck softly"),
    "drum_tom_mid_hard": ("tom", "a mid tom drum struck hard"),
    "drum_tom_mid_soft": ("tom", "a mid tom drum struck softly"),
    "drum_tom_lo_hard": ("tom", "a low floor tom struck hard"),
    "drum_tom_lo_soft": ("tom", "a low floor tom struck softly"),
    "elec_fuzz_tom": ("tom", "a fuzzy electronic tom"),
    "drum_cowbell": ("percussion", "a cowbell hit"),
    "drum_roll": ("percussion", "a drum roll"),
    "perc_snap": ("percussion", "a finger snap"),
    "perc_snap2": ("percussion", "a finger snap"),
    "elec_beep": ("electronic", "a short electronic beep"),
    "elec_bell": ("electronic", "an electronic bell tone"),
    "elec_blip": ("electronic", "a short electronic blip"),
    "elec_blip2": ("electronic", "a short electronic blip"),
    "elec_blup": ("electronic", "a bubbly electronic blup"),
    "elec_bong": ("electronic", "an electronic bong"),
    "elec_chime": ("electronic", "an electronic chime ringing out"),
    "elec_flip": ("electronic", "a tiny electronic flip"),
    "elec_ping": ("electronic", "an electronic ping"),
    "elec_plip": ("electronic", "a short electronic plip"),
    "elec_pop": ("electronic", "an electronic pop"),
    "elec_tick": ("electronic", "an electronic tick"),
    "elec_triangle": ("electronic", "an electronic triangle ding"),
    "elec_twang": ("electronic", "an electronic twang"),
    "elec_twip": ("electronic", "a short electronic twip"),
    "elec_wood": ("electronic", "an electronic woodblock knock"),
    "glitch_perc1": ("glitch", "a glitchy electronic percussion hit"),
    "glitch_perc2": ("glitch", "a glitchy electronic percussion hit"),
    "glitch_perc3": ("glitch", "a glitchy electronic percussion hit"),
    "glitch_perc4": ("glitch", "a glitchy electronic percussion hit"),
    "glitch_perc5": ("glitch", "a glitchy electronic percussion hit"),
    "glitch_robot1": ("robot", "a glitchy robot sound effect"),
    "glitch_robot2": ("robot", "a glitchy robot sound effect"),
    "guit_e_fifths": ("guitar", "a guitar playing power chords of fifths in E"),
    "guit_e_slide": ("guitar", "a slide guitar phrase in E"),
    "guit_em9": ("guitar", "a guitar strumming an E minor ninth chord"),
    "guit_harmonics": ("guitar", "guitar harmonics ringing out"),
    "loop_3d_printer": ("loop", "a looped recording of a 3D printer's motors whirring"),
    "loop_amen": ("loop", "the amen break drum loop"),
    "loop_amen_full": ("loop", "the full amen break drum loop"),
    "loop_breakbeat": ("loop", "a breakbeat drum loop"),
    "loop_compus": ("loop", "an electronic drum groove loop"),
    "loop_drone_g_97": ("loop", "a droning loop in G at 97 bpm"),
    "loop_electric": ("loop", "a buzzing electric rhythmic loop"),
    "loop_garzul": ("loop", "an electronic drum loop"),
    "loop_industrial": ("loop", "an industrial percussion loop"),
    "loop_mehackit1": ("loop", "an electronic beat loop"),
    "loop_mehackit2": ("loop", "an electronic beat loop"),
    "loop_mika": ("loop", "a drum loop"),
    "loop_perc1": ("loop", "a percussion loop"),
    "loop_perc2": ("loop", "a percussion loop"),
    "loop_safari": ("loop", "a hand percussion loop with a safari feel"),
    "loop_tabla": ("loop", "a tabla drum loop"),
    "loop_weirdo": ("loop", "a weird, quirky electronic loop"),
    "mehackit_phone1": ("phone", "a telephone sound effect"),
    "mehackit_phone2": ("phone", "a telephone sound effect"),
    "mehackit_phone3": ("phone", "a telephone sound effect"),
    "mehackit_phone4": ("phone", "a telephone sound effect"),
    **{f"mehackit_robot{i}": ("robot", "a robot sound effect with electronic bleeps") for i in range(1, 8)},
    "misc_burp": ("misc", "a person burping"),
    "misc_crow": ("misc", "a crow cawing"),
    "perc_till": ("misc", "a cash register till opening with a ring"),
    "misc_cineboom": ("impact", "a deep cinematic boom"),
    "perc_door": ("impact", "a percussive hit on a door"),
    "perc_impact1": ("impact", "a heavy percussive impact"),
    "perc_impact2": ("impact", "a heavy percussive impact"),
    "perc_bell": ("bell", "a bell being struck and ringing out"),
    "perc_bell2": ("bell", "a bell being struck and ringing out"),
    "perc_swoosh": ("whoosh", "a fast swoosh"),
    "vinyl_backspin": ("vinyl", "a vinyl record backspin"),
    "vinyl_hiss": ("vinyl", "the crackle and hiss of a vinyl record"),
    "vinyl_rewind": ("vinyl", "a vinyl record being rewound"),
    "vinyl_scratch": ("vinyl", "a vinyl record scratch"),
}
TABLA_BOLS = {"ghe": "a resonant low tabla stroke (ghe)", "dhec": "a combined tabla stroke (dhe)",
              "ke": "a dry muted tabla stroke (ke)", "na": "a ringing tabla stroke (na)",
              "re": "a light tabla stroke (re)", "tas": "a tabla stroke (tas)",
              "te": "a sharp tabla stroke (te)", "tun": "a ringing open tabla stroke (tun)"}

# LinCity-NG ambience category (file name without digits) -> (label, caption). Categories whose
# content the name does not pin down (Green, Health, Monument, Market, Power*, ...) are left out of TTA.
LINCITY_CAPTIONS: dict[str, tuple[str, str]] = {
    "Blacksmith": ("blacksmith", "a blacksmith hammering metal on an anvil"),
    "CoalMine": ("mine", "a coal mine with working machinery"),
    "OreMine": ("mine", "an ore mine with rumbling machinery"),
    "Farm": ("farm", "farmyard ambience with animals"),
    "OrganicFarm": ("farm", "the ambience of an organic farm"),
    "Fire": ("fire", "a fire burning and crackling"),
    "Harbor": ("harbour", "the ambience of a busy harbour"),
    "IndustryHigh": ("industry", "loud heavy industry with machines"),
    "IndustryLight": ("industry", "light industry with machines running"),
    "Mill": ("industry", "a mill with machinery turning"),
    "RailTrain": ("train", "a train on a railway"),
    "Rocket": ("rocket", "a rocket launch site"),
    "RocketTakeoff": ("rocket", "a rocket taking off"),
    "RocketExplosion": ("rocket", "a rocket exploding"),
    "School": ("crowd", "children in a school"),
    "SportsCroud": ("crowd", "a sports crowd cheering"),
    "TraficHigh": ("traffic", "heavy road traffic"),
    "TraficLow": ("traffic", "light road traffic"),
    "Water": ("water", "running water"),
    "ParklandLake": ("water", "a lake in a park"),
    "WindMill": ("windmill", "a windmill turning in the wind"),
    "MonumentConstruction": ("construction", "a construction site building a monument"),
}

# GM programs (0-based) for the tune renderer: caption name -> program.
INSTRUMENTS = {"piano": 0, "accordion": 21, "acoustic guitar": 24, "fiddle": 40, "trumpet": 56, "flute": 73}
RHYTHMS = {"reel": "reel", "hornpipe": "hornpipe", "jig": "jig", "strathspey": "strathspey", "clog": "clog",
           "slip jig": "slip jig", "slipjig": "slip jig", "highland fling": "highland fling",
           "fling": "highland fling"}
METERS = {"C": "4/4", "C|": "2/2", "2/4": "2/4", "4/4": "4/4", "2/2": "2/2", "3/4": "3/4", "6/8": "6/8",
          "9/8": "9/8", "12/8": "12/8", "3/2": "3/2"}
MODES = {"": "major", "maj": "major", "major": "major", "ion": "major", "m": "minor", "min": "minor",
         "minor": "minor", "aeo": "minor", "dor": "dorian", "mix": "mixolydian", "lyd": "lydian",
         "phr": "phrygian"}


# ---------------------------------------------------------------------------------------------------------
# Audio helpers
def _rng(*keys: object) -> np.random.Generator:
    """A generator seeded from SEED and `keys`, so each item's draws do not depend on processing order."""
    return np.random.default_rng([SEED, *(zlib.crc32(str(k).encode()) for k in keys)])


def read_mono(path: Path | bytes, sr: int = SR) -> np.ndarray:
    """Read any soundfile-readable file (or WAV bytes) as float32 mono at `sr` Hz, shape (N,)."""
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    x, file_sr = sf.read(source, dtype="float32", always_2d=True)  # (N, channels)
    x = x.mean(axis=1)
    return soxr.resample(x, file_sr, sr).astype(np.float32) if file_sr != sr else x


def decode_g722(path: Path) -> np.ndarray:
    """Decode an Asterisk .g722 prompt (16 kHz wideband) with ffmpeg, shape (N,) float32."""
    wav = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-ar", str(SR), "-ac", "1",
                          "-f", "wav", "-"], check=True, capture_output=True).stdout
    return read_mono(wav)


def trim_silence(x: np.ndarray, rel_db: float = -50.0, pad_s: float = 0.01) -> np.ndarray:
    """Cut leading/trailing samples quieter than `rel_db` below the peak, keeping `pad_s` s of margin."""
    above = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (rel_db / 20))
    if above.size == 0:
        return x[:0]
    pad = int(pad_s * SR)
    return x[max(0, above[0] - pad): above[-1] + pad + 1]


def peak_normalise(x: np.ndarray, peak_db: float = -1.0) -> np.ndarray:
    """Scale so that max |x| is `peak_db` dBFS."""
    return (x * (10 ** (peak_db / 20) / np.abs(x).max())).astype(np.float32)


def fade_out(x: np.ndarray, seconds: float = 0.05) -> np.ndarray:
    """Linear fade over the last `seconds` so cut excerpts end without a click."""
    n = min(len(x), int(seconds * SR))
    x = x.copy()
    x[len(x) - n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return x


def write_flac(path: Path, x: np.ndarray) -> float:
    """Write 16 kHz mono 16-bit FLAC; returns the duration in seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(x, -1.0, 1.0), SR, subtype="PCM_16", format="FLAC", compression_level=1.0)
    return round(len(x) / SR, 3)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write one JSON object per line."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def split_by_label(rows: list[dict], key: str, test_frac: float = 0.15) -> tuple[list[dict], list[dict]]:
    """Hold out round(test_frac * n) rows per value of `key` (at least 1 when n >= 3), deterministically."""
    train, test = [], []
    for value in sorted({r[key] for r in rows}):
        group = sorted((r for r in rows if r[key] == value), key=lambda r: r["id"])
        n_test = max(1, round(test_frac * len(group))) if len(group) >= 3 else 0
        held = set(_rng("split", key, value).permutation(len(group))[:n_test].tolist())
        for i, r in enumerate(group):
            (test if i in held else train).append(r)
    return sorted(train, key=lambda r: r["id"]), sorted(test, key=lambda r: r["id"])


# ---------------------------------------------------------------------------------------------------------
# TTA: captioned sound events
def sonic_pi_caption(name: str) -> tuple[str, str]:
    """Label and caption of a Sonic Pi sample from its file name."""
    if name in SONIC_PI_CAPTIONS:
        return SONIC_PI_CAPTIONS[name]
    m = re.fullmatch(r"tabla_([a-z]+?)(\d*|_\w+)", name)
    if m and m.group(1) in TABLA_BOLS:
        return "tabla", TABLA_BOLS[m.group(1)]
    raise ValueError(f"no caption for Sonic Pi sample {name!r}; add it to SONIC_PI_CAPTIONS in {__file__}")


def build_tta(out: Path, sonic_seconds: float = 3.0, lincity_seconds: float = 2.0,
              lincity_per_category: int = 2) -> dict:
    """Write tta/audio/*.flac and tta/{train,test}.jsonl from Sonic Pi samples and LinCity-NG ambiences.

    Clips are cut to `sonic_seconds` / `lincity_seconds` (the 22 MB budget); `lincity_per_category` files
    of each captioned LinCity category.
    """
    sources = [(p, "sonicpi_" + p.stem, *sonic_pi_caption(p.stem), sonic_seconds)
               for p in sorted(SONIC_PI.glob("*.flac"))]
    per_category: dict[str, int] = {}
    for p in sorted(LINCITY.glob("*.wav")):
        category = re.sub(r"\d+$", "", p.stem)
        if category in LINCITY_CAPTIONS and per_category.get(category, 0) < lincity_per_category:
            per_category[category] = per_category.get(category, 0) + 1
            sources.append((p, "lincity_" + p.stem, *LINCITY_CAPTIONS[category], lincity_seconds))
    rows, skipped = [], []
    for path, clip_id, label, caption, max_seconds in sources:
        x = read_mono(path)
        if np.abs(x).max() < 1e-3:
            skipped.append(path.name)
            continue
        x = trim_silence(x)[: int(max_seconds * SR)]
        if len(x) < 0.2 * SR:
            skipped.append(path.name)
            continue
        duration = write_flac(out / "tta" / "audio" / f"{clip_id}.flac", fade_out(peak_normalise(x), 0.01))
        rows.append({"id": clip_id, "audio": f"audio/{clip_id}.flac", "caption": caption, "label": label,
                     "duration": duration})
    train, test = split_by_label(rows, "label")
    write_jsonl(out / "tta" / "train.jsonl", train)
    write_jsonl(out / "tta" / "test.jsonl", test)
    return {"train": train, "test": test, "skipped": skipped}


# ---------------------------------------------------------------------------------------------------------
# TTM: ABC tunes rendered with a chosen instrument and tempo
def parse_abc_header(text: str) -> dict[str, str]:
    """First value of each single-letter ABC header field (T, M, L, R, K, ...)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]):\s*(.*?)\s*$", line)
        if m and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2)
    return fields


def abc_key_name(k: str) -> str | None:
    """ABC K: value -> 'D major' / 'E minor' / 'A dorian'; None for keys we do not caption (HP, none...)."""
    m = re.fullmatch(r"([A-G])([#b]?)\s*([A-Za-z]*).*", k.strip())
    if not m or m.group(3).lower()[:3] not in {k[:3] for k in MODES} | {""}:
        return None
    mode = m.group(3).lower()
    mode = MODES.get(mode, MODES.get(mode[:3]))
    accidental = {"#": " sharp", "b": " flat", "": ""}[m.group(2)]
    return f"{m.group(1)}{accidental} {mode}" if mode else None


def render_abc(abc: str, program: int, bpm: int, beat: str, workdir: Path) -> np.ndarray | None:
    """Render one ABC tune with a GM program and tempo (`bpm` beats of length `beat`) to 16 kHz mono."""
    lines = []
    for line in abc.splitlines():
        if line.startswith(("Q:", "%%MIDI")):
            continue  # our tempo and instrument replace the tune's own
        if line.startswith("K:"):
            lines += [f"Q:{beat}={bpm}", line, f"%%MIDI program {program}", "%%MIDI gchordoff"]
        else:
            lines.append(line)
    (workdir / "t.abc").write_text("\n".join(lines) + "\n")
    res = subprocess.run(["abc2midi", "t.abc", "-o", "t.mid", "-silent"], cwd=workdir, capture_output=True,
                         text=True)
    if res.returncode != 0 or "Error" in res.stdout + res.stderr or not (workdir / "t.mid").exists():
        return None
    subprocess.run(["fluidsynth", "-ni", "-q", "-r", str(SR), "-g", "0.5", "-F", "t.wav", str(SOUNDFONT),
                    "t.mid"], cwd=workdir, check=True, capture_output=True)
    x = read_mono(workdir / "t.wav")
    for name in ("t.abc", "t.mid", "t.wav"):
        (workdir / name).unlink()
    return x


def build_ttm(out: Path, n_clips: int = 38) -> dict:
    """Write ttm/audio/*.flac and ttm/{train,test}.jsonl: one 6-6.5 s excerpt per Ryan's Mammoth tune."""
    import music21  # imported here so tta/se build without it

    corpus = Path(music21.__file__).parent / "corpus" / "ryansMammoth"
    files = sorted(corpus.glob("*.abc"))
    order = _rng("ttm-order").permutation(len(files))
    instruments = list(INSTRUMENTS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for idx in order:
            if len(rows) == n_clips:
                break
            path = files[idx]
            text = path.read_text(errors="replace")
            head = parse_abc_header(text)
            rhythm = RHYTHMS.get(head.get("R", "").strip().lower())
            meter = METERS.get(head.get("M", "").replace(" ", ""))
            key = abc_key_name(head.get("K", ""))
            if not (rhythm and meter and key and head.get("T")) or re.search(r"^V:", text, re.M) \
                    or len(re.findall(r"^X:", text, re.M)) != 1:
                continue
            rng = _rng("ttm", path.name)
            instrument = instruments[len(rows) % len(instruments)]  # balanced over clips
            compound = meter in {"6/8", "9/8", "12/8"}
            beat = "3/8" if compound else ("1/2" if meter in {"2/2", "3/2"} else "1/4")
            tempi = np.arange(70, 131, 5) if compound or beat == "1/2" else np.arange(80, 161, 5)
            bpm = int(rng.choice(tempi))
            x = render_abc(text, INSTRUMENTS[instrument], bpm, beat, Path(tmp))
            if x is None:
                continue
            x = trim_silence(x, rel_db=-40.0)
            seconds = float(rng.uniform(6.0, 6.5))
            if len(x) < seconds * SR:
                continue
            x = fade_out(peak_normalise(x[: int(seconds * SR)]))
            title = head["T"].split("--")[0].strip().strip('"').strip()
            title = title.title() if title.isupper() else title
            clip_id = "ryan_" + path.stem
            article = "an" if rhythm[0] in "aeiou" else "a"
            caption = f"{article} {rhythm} in {key}, {meter}, played on {instrument} at {bpm} bpm"
            duration = write_flac(out / "ttm" / "audio" / f"{clip_id}.flac", x)
            rows.append({"id": clip_id, "audio": f"audio/{clip_id}.flac", "caption": caption,
                         "instrument": instrument, "gm_program": INSTRUMENTS[instrument], "tempo": bpm,
                         "beat": beat, "key": key, "meter": meter, "rhythm": rhythm, "title": title,
                         "source": f"music21/corpus/ryansMammoth/{path.name}", "duration": duration})
    train, test = split_by_label(rows, "instrument")
    write_jsonl(out / "ttm" / "train.jsonl", train)
    write_jsonl(out / "ttm" / "test.jsonl", test)
    return {"train": train, "test": test}


# ---------------------------------------------------------------------------------------------------------
# SE: clean prompts + real noises; test mixtures at fixed SNRs
def allison_prompts() -> list[tuple[str, Path, str, float]]:
    """(name, path, transcript, seconds) of every Allison prompt that has a spoken transcript."""
    texts = {}
    for line in gzip.open(ALLISON_TEXT, "rt", errors="replace"):
        if ":" in line and not line.startswith(";"):
            name, text = line.split(":", 1)
            texts[name.strip()] = text.strip()
    prompts = []
    for path in sorted(ALLISON.rglob("*.g722")):
        name = path.relative_to(ALLISON).with_suffix("").as_posix()
        text = texts.get(name, "")
        # Whole words and sentences only: no "[beep]" notes, no spelled letters or phonetic alphabet.
        if text and "[" not in text and not name.startswith(("silence/", "letters/", "phonetic/")):
            prompts.append((name, path, text, path.stat().st_size / 8000))  # G.722 = 64 kbit/s
    return prompts


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale `noise` to `snr_db` below `clean` (power over the whole clip), add; rescale both if it clips."""
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    noisy = clean + gain * noise
    scale = min(1.0, 0.99 / np.abs(noisy).max())
    return (clean * scale).astype(np.float32), (noisy * scale).astype(np.float32)


def build_se_allison(out: Path, n_test: int = 40, train_seconds: float = 200.0,
                     noise_seconds: float = 2.5) -> dict:
    """The Allison part of se/: clean prompts, LinCity-NG noises, 40 test mixtures (rows not yet written)."""
    se = out / "se"
    prompts = allison_prompts()
    order = _rng("se-prompts").permutation(len(prompts))
    test_prompts = [prompts[i] for i in order if 2.0 <= prompts[i][3] <= 3.0][:n_test]
    test_names = {p[0] for p in test_prompts}
    train_rows, total = [], 0.0
    for i in order:
        name, path, text, seconds = prompts[i]
        if name in test_names or not 1.0 <= seconds <= 6.0 or total >= train_seconds:
            continue
        x = trim_silence(decode_g722(path), rel_db=-45.0, pad_s=0.05)
        clip_id = "allison_" + name.replace("/", "_")
        total += write_flac(se / "clean" / f"{clip_id}.flac", x)
        train_rows.append({"id": clip_id, "clean": f"clean/{clip_id}.flac", "transcript": text})

    # Noises: LinCity-NG ambiences of >= 2 s. The highest-numbered file of each category with >= 2 such files
    # is held out for the test mixtures, so test noises are recordings the model never saw.
    noises: dict[str, list[Path]] = {}
    for p in sorted(LINCITY.glob("*.wav")):
        if sf.info(p).duration >= 2.0:
            noises.setdefault(re.sub(r"\d+$", "", p.stem), []).append(p)
    test_noises = [files[-1] for files in noises.values() if len(files) >= 2]
    # One training file per category (the budget), at its original level (mixing sets the SNR anyway).
    train_noises = [files[0] for files in noises.values()] + [SONIC_PI / f"{n}.flac" for n in SE_SONIC_TRAIN]
    noise_rows = []
    for p in train_noises:
        clip_id = ("sonicpi_" if p.parent == SONIC_PI else "lincity_") + p.stem
        write_flac(se / "noise" / f"{clip_id}.flac", read_mono(p)[: int(noise_seconds * SR)])
        noise_rows.append({"audio": f"noise/{clip_id}.flac", "source": p.name})
    train_rows = [{**r, "speaker": "asterisk/allison", "source": "asterisk-core-sounds-en-g722"} for r in train_rows]

    snr_grid = [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0]
    test_rows = []
    for j, (name, path, text, _) in enumerate(sorted(test_prompts)):
        rng = _rng("se-test", name)
        clean = trim_silence(decode_g722(path), rel_db=-45.0, pad_s=0.05)
        noise_path = test_noises[j % len(test_noises)]
        noise = read_mono(noise_path)
        noise = np.tile(noise, int(np.ceil(len(clean) / len(noise))) + 1)
        start = int(rng.integers(0, len(noise) - len(clean)))
        snr_db = snr_grid[j % len(snr_grid)]
        clean, noisy = mix_at_snr(clean, noise[start: start + len(clean)], snr_db)
        clip_id = "allison_" + name.replace("/", "_")
        write_flac(se / "test" / "clean" / f"{clip_id}.flac", clean)
        write_flac(se / "test" / "noisy" / f"{clip_id}.flac", noisy)
        test_rows.append({"id": clip_id, "clean": f"test/clean/{clip_id}.flac",
                          "noisy": f"test/noisy/{clip_id}.flac", "snr_db": snr_db, "transcript": text,
                          "noise_source": noise_path.name, "speaker": "asterisk/allison"})
    return {"train": train_rows, "noise": noise_rows, "test": test_rows, "train_seconds": total,
            "test_noises": test_noises}


# More voices and noises for SE: every speaker and noise in the test split below is one training never hears.
def speaker_items() -> dict[str, list[tuple[str, Path]]]:
    """Speaker id ("klettres/fr", "ktuberling/de") -> [(spoken text, file)]: one speaker per language folder."""
    speakers: dict[str, list[tuple[str, Path]]] = {}
    for lang in sorted(d for d in KLETTRES.iterdir() if d.is_dir()):
        files = sorted(lang.rglob("*.ogg"))
        if len(files) >= 8:  # letters (alpha/) and syllables (syllab/); "a-0" / "a-1" are takes of "a"
            speakers[f"klettres/{lang.name}"] = [(re.sub(r"-\d+$", "", f.stem), f) for f in files]
    for lang in sorted(d for d in KTUBERLING.iterdir() if d.is_dir()):
        files = sorted([*lang.glob("*.ogg"), *lang.glob("*.wav")])
        if len(files) >= 8:
            # The file names are the English names of the objects the speaker names in their own language.
            speakers[f"ktuberling/{lang.name}"] = [(f"[{f.stem.replace('_', ' ')}]", f) for f in files]
    return speakers


def utterance(items: list[tuple[str, Path]], rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    """Random items of one speaker joined with 0.08-0.25 s pauses until `seconds`; (audio, transcript)."""
    parts, words, total = [], [], 0.0
    for i in rng.permutation(len(items)):
        text, path = items[i]
        x = trim_silence(read_mono(path), rel_db=-40.0, pad_s=0.03)
        if x.size < 0.1 * SR:
            continue
        x = x / max(np.abs(x).max(), 1e-6)  # packages record at different levels: equalise the peaks
        gap = np.zeros(int(rng.uniform(0.08, 0.25) * SR), np.float32)
        parts += [x, gap]
        words.append(text)
        total += (x.size + gap.size) / SR
        if total >= seconds:
            break
    return peak_normalise(np.concatenate(parts[:-1])), " ".join(words)


def espeak(text: str, voice: str, speed: int) -> np.ndarray:
    """Synthetic speech from espeak-ng (22.05 kHz) at 16 kHz, shape (N,)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True,
                         capture_output=True).stdout
    return peak_normalise(trim_silence(read_mono(wav), rel_db=-45.0, pad_s=0.05))


def synthetic_noise(kind: str, seconds: float, seed: str) -> np.ndarray:
    """Coloured noise ("white", "pink", "brown") or mains hum ("hum50", "hum60": harmonics + a little hiss)."""
    rng, n = _rng("noise", seed), int(seconds * SR)
    if kind.startswith("hum"):
        f0, t = float(kind[3:]), np.arange(n) / SR
        amps = rng.uniform(0.2, 1.0, 8) / np.arange(1, 9) ** rng.uniform(0.5, 1.5)
        x = sum(a * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) for k, a in enumerate(amps, 1))
        x = x + 0.02 * rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
        spec = spec * {"white": 1.0, "pink": f ** -0.5, "brown": f ** -1.0}[kind]
        x = np.fft.irfft(spec, n)
    return peak_normalise(x.astype(np.float32), -6.0)


def build_se_voices(out: Path, allison: dict, utt_seconds: float = 2.4, per_train_speaker: int = 3,
                    per_test_speaker: int = 8) -> dict:
    """Add many-speaker clean clips, espeak-ng voices and more noises to se/; test rows for held-out speakers."""
    se, train, test = out / "se", [], []
    for speaker, items in speaker_items().items():
        held = speaker in SE_TEST_SPEAKERS
        for k in range(per_test_speaker if held else per_train_speaker):
            x, text = utterance(items, _rng("se-voice", speaker, k), utt_seconds)
            clip_id = f"{speaker.replace('/', '_')}_{k}"
            row = {"id": clip_id, "transcript": text, "speaker": speaker, "source": speaker.split("/")[0] + "-data"}
            (test if held else train).append((row, x))
    for j, voice in enumerate(ESPEAK_VOICES):  # synthetic voices speak Allison's training sentences
        for k in range(2):
            text = allison["train"][(3 * j + k) % len(allison["train"])]["transcript"]
            x = espeak(text, voice, int(_rng("espeak", voice, k).integers(140, 200)))
            row = {"id": f"espeak_{re.sub(r'[^a-z0-9]+', '-', voice)}_{k}", "transcript": text,
                   "speaker": f"espeak-ng/{voice}", "source": "espeak-ng"}
            train.append((row, x))
    for row, x in train:
        write_flac(se / "clean" / f"{row['id']}.flac", x)
        allison["train"].append({**row, "clean": f"clean/{row['id']}.flac"})
    for kind in ("white", "pink", "brown", "hum50"):
        write_flac(se / "noise" / f"synthetic_{kind}.flac", synthetic_noise(kind, 2.5, kind))
        allison["noise"].append({"audio": f"noise/synthetic_{kind}.flac", "source": f"synthetic:{kind}"})
    # Held-out noises: LinCity-NG test files, Sonic Pi samples and a 60 Hz hum training never hears.
    noises = [(p.name, read_mono(p)) for p in allison["test_noises"]]
    noises += [(f"{n}.flac", read_mono(SONIC_PI / f"{n}.flac")) for n in SE_SONIC_TEST]
    noises += [("synthetic:hum60", synthetic_noise("hum60", 4.0, "hum60-test"))]
    snr_grid = [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0]
    for j, (row, clean) in enumerate(test):
        name, noise = noises[(7 * j) % len(noises)]
        noise = np.tile(noise, int(np.ceil(len(clean) / len(noise))) + 1)
        start = int(_rng("se-test-voice", row["id"]).integers(0, len(noise) - len(clean)))
        snr_db = snr_grid[j % len(snr_grid)]
        clean, noisy = mix_at_snr(clean, noise[start: start + len(clean)], snr_db)
        write_flac(se / "test" / "clean" / f"{row['id']}.flac", clean)
        write_flac(se / "test" / "noisy" / f"{row['id']}.flac", noisy)
        allison["test"].append({"id": row["id"], "clean": f"test/clean/{row['id']}.flac",
                                "noisy": f"test/noisy/{row['id']}.flac", "snr_db": snr_db,
                                "transcript": row["transcript"], "noise_source": name, "speaker": row["speaker"]})
    return allison


def build_se(out: Path) -> dict:
    """Write se/{clean,noise,test/clean,test/noisy} and se/{train,noise_train,test}.jsonl."""
    rows = build_se_voices(out, build_se_allison(out))
    write_jsonl(out / "se" / "train.jsonl", rows["train"])
    write_jsonl(out / "se" / "noise_train.jsonl", rows["noise"])
    write_jsonl(out / "se" / "test.jsonl", rows["test"])
    rows.pop("test_noises")
    return rows


# ---------------------------------------------------------------------------------------------------------
# README.md (measured numbers) and LICENSE.md (attribution)
def _du(path: Path) -> int:
    """Total bytes of the files under `path` (what `du -sb` counts for the file contents)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _seconds(folder: Path, pattern: str = "*.flac") -> tuple[int, float]:
    files = sorted(folder.glob(pattern))
    return len(files), sum(sf.info(p).duration for p in files)


def write_readme(out: Path) -> None:
    """Write data/demo/README.md with counts, durations and sizes measured from the files on disk."""
    def count(manifest: Path) -> int:
        return sum(1 for _ in manifest.open())

    def line(task: str, folder: str, manifest: str, desc: str) -> str:
        n, sec = _seconds(out / task / folder)
        return (f"| {task}/{manifest} | {count(out / task / manifest)} | {desc} | {n} files, "
                f"{sec / 60:.1f} min |")

    tta = [json.loads(x) for x in (out / "tta" / "train.jsonl").open()] + \
        [json.loads(x) for x in (out / "tta" / "test.jsonl").open()]
    labels = sorted({r["label"] for r in tta})
    n_tta, s_tta = _seconds(out / "tta" / "audio")
    n_ttm, s_ttm = _seconds(out / "ttm" / "audio")
    n_cl, s_cl = _seconds(out / "se" / "clean")
    n_no, s_no = _seconds(out / "se" / "noise")
    n_te, s_te = _seconds(out / "se" / "test" / "clean")
    n_spk = len({json.loads(x)["speaker"] for x in (out / "se" / "train.jsonl").open()})
    n_test_spk = len({json.loads(x)["speaker"] for x in (out / "se" / "test.jsonl").open()} - {"asterisk/allison"})
    parts = [
        "# Demo dataset (real recordings, 16 kHz mono 16-bit FLAC)",
        "",
        "Generated by `python data/build_demo_data.py` (see its docstring for the Debian packages it reads);",
        "do not edit by hand. Sources and licences: [LICENSE.md](LICENSE.md). Manifest paths are relative to",
        "the manifest file.",
        "",
        "| split | rows | content | audio |",
        "|---|---|---|---|",
        f"| tta/train.jsonl | {count(out / 'tta' / 'train.jsonl')} | captioned sound events (Sonic Pi"
        f" samples, LinCity-NG ambiences) | {n_tta} files in tta/audio, {s_tta / 60:.1f} min in all |",
        f"| tta/test.jsonl | {count(out / 'tta' / 'test.jsonl')} | ~15 % of each label held out"
        " | (same folder) |",
        f"| ttm/train.jsonl | {count(out / 'ttm' / 'train.jsonl')} | Ryan's Mammoth tunes rendered with"
        f" FluidR3_GM | {n_ttm} files in ttm/audio, {s_ttm / 60:.1f} min in all |",
        f"| ttm/test.jsonl | {count(out / 'ttm' / 'test.jsonl')} | ~15 % of each instrument held out"
        " | (same folder) |",
        f"| se/train.jsonl | {count(out / 'se' / 'train.jsonl')} | clean speech of {n_spk} speakers (Allison"
        f" prompts, KLettres/KTuberling voices, espeak-ng) | {n_cl} files, {s_cl / 60:.1f} min |",
        f"| se/noise_train.jsonl | {count(out / 'se' / 'noise_train.jsonl')} | training noises (mix on the"
        f" fly) | {n_no} files, {s_no / 60:.1f} min |",
        f"| se/test.jsonl | {count(out / 'se' / 'test.jsonl')} | other Allison prompts + {n_test_spk} held-out"
        " speakers, noise recordings never heard in training,"
        f" fixed SNR in {{-5, 0, 5, 10, 15, 20}} dB | {n_te} clean + {n_te} noisy,"
        f" {s_te / 60:.1f} min each |",
        "",
        f"TTA labels ({len(labels)}): {', '.join(labels)}.",
        "",
        "TTM captions name the rhythm (R:), key (K:) and meter (M:) from the tune's ABC header and the GM",
        "instrument and tempo chosen at render time; `tempo` counts `beat` notes per minute (a quarter note",
        "in simple meters, a dotted quarter in 6/8, 9/8, 12/8, a half note in 2/2). Excerpts start at the",
        "first note and are peak-normalised to -1 dBFS.",
        "",
        "SE: LinCity-NG ambiences are mostly 11.025 kHz recordings, so most noises have no energy above",
        "5.5 kHz; the Allison speech is real 16 kHz wideband (G.722). Training noises (one file per category,",
        "4 Sonic Pi samples, white/pink/brown noise and a 50 Hz hum) are cut to 2.5 s; test noise files (the",
        "highest-numbered file of each LinCity category, 2 other Sonic Pi samples, a 60 Hz hum) never appear",
        "in training. KLettres (letters, syllables) and KTuberling (words) recordings are one speaker per",
        f"language folder, joined into ~2.4 s utterances; the test split holds out {', '.join(SE_TEST_SPEAKERS)}",
        "(`speaker` field). KTuberling transcripts are the English names, in brackets, of the objects spoken.",
        "espeak-ng voices (synthetic) read Allison's training sentences, training only.",
        "`pocketsphinx-testdata` and the sound files of `alsa-utils` are never used (kept for an outside check).",
        "",
        "| folder | bytes |",
        "|---|---|",
        *(f"| {t}/ | {_du(out / t):,} |" for t in ("tta", "ttm", "se")),
        f"| total (audio + manifests) | {sum(_du(out / t) for t in ('tta', 'ttm', 'se')):,} |",
        "",
    ]
    (out / "README.md").write_text("\n".join(parts))


def sonic_pi_attribution() -> dict[str, str]:
    """Sample name -> 'author, URL' from the Debian copyright file and the samples README."""
    norm = lambda s: s.replace("_", "").replace(".flac", "")  # noqa: E731 (README and files spell names apart)
    credits: dict[str, str] = {}
    readme = (SONIC_PI / "README.md").read_text()
    for name, url in re.findall(r"`:(\w+)`\s*-\s*(\S+)", readme):
        author = re.search(r"/people/([^/]+)/", url)
        credits[norm(name)] = f"{author.group(1).replace('%20', ' ') if author else '?'}, {url}"
    stanzas = SONIC_PI_COPYRIGHT.read_text().split("\n\n")
    for st in stanzas:
        m = re.search(r"^Files: etc/samples/(\S+)", st, re.M)
        cp, src = re.search(r"^Copyright: (.+)$", st, re.M), re.search(r"^Source: (\S+)", st, re.M)
        if m and cp and src:
            credits[norm(m.group(1))] = f"{cp.group(1)}, {src.group(1)}"
    return credits


def write_license(out: Path, tta_rows: list[dict], se_noise: list[dict]) -> None:
    """Write data/demo/LICENSE.md: per-source package, upstream, licence and attribution."""
    credits = sonic_pi_attribution()
    n_lincity = sum("lincity_" in r["audio"] for r in se_noise)
    used = sorted({r["id"].removeprefix("sonicpi_") for r in tta_rows if r["id"].startswith("sonicpi_")}
                  | set(SE_SONIC_TRAIN) | set(SE_SONIC_TEST))
    sonic_lines = [f"- `{n}`: {credits.get(n.replace('_', ''), 'see /usr/share/sonic-pi/samples/README.md')}"
                   for n in used]
    text = f"""# Licences and attribution of data/demo

All files here were converted from the sources below by `data/build_demo_data.py`: decoded, mixed to mono,
resampled to 16 kHz, trimmed/cut, peak-normalised, and (SE test split) mixed with noise at a stated SNR.
Each file keeps the licence of its source; share-alike sources (CC-BY-SA, GPL) stay under that licence.

## Asterisk core sound prompts (English, "Allison") -> se/clean, se/test, tests/fixtures/audio/speech.wav
- Debian packages `asterisk-core-sounds-en-g722` (audio, G.722 16 kHz) and `asterisk-core-sounds-en`
  (transcripts, core-sounds-en.txt.gz). Upstream: https://www.asterisk.org
  (https://downloads.asterisk.org/pub/telephony/sounds/).
- Licence: Creative Commons Attribution-ShareAlike 3.0 (CC-BY-SA-3.0).
- Attribution: Copyright 2003-2010 Allison Smith (recorded by Allison Smith, http://www.theivrvoice.com;
  financial contributions by Digium, Inc.), "Asterisk core sounds" (en).

## Sonic Pi samples -> tta/audio/sonicpi_*, se/noise/sonicpi_*, se/test (ambi_sauna, ambi_haunted_hum)
- Debian package `sonic-pi-samples`, upstream https://github.com/sonic-pi-net/sonic-pi (etc/samples).
- Licence: CC0 1.0 (public domain dedication) for every sample, per /usr/share/sonic-pi/samples/README.md and
  /usr/share/doc/sonic-pi-samples/copyright. Attribution is not required; we give it anyway (freesound
  author, source):
{chr(10).join(sonic_lines)}

## LinCity-NG sound effects -> tta/audio/lincity_*, se/noise, se/test/noisy, tests/fixtures/audio/noise.wav
- Debian package `lincity-ng-data`, upstream https://github.com/lincity-ng/lincity-ng (data/sounds).
- Licence: GPL-2+; the models, images and sound effects are dual-licensed GPL-2+ / Creative Commons
  Attribution-ShareAlike 2.0. Copyright the LinCity-NG authors (I J Peters, Greg Sharp, Corey Keasling,
  Ingo Ruhnke, David Kamphausen, Jimmy Salmon, Wolfgang Becker, Matthias Braun, Xabier Cancela; see the
  upstream CREDITS file). {n_lincity} training noise files and the test mixtures derive from them.

## KLettres letters and syllables -> se/clean/klettres_*, se/test (held-out speakers)
- Debian package `klettres-data`, upstream https://invent.kde.org/education/klettres (data/sounds).
- Licence: GPL-2+ (Copyright 2001-2011 Anne-Marie Mahfouf and the KDE contributors; see
  /usr/share/doc/klettres-data/copyright). One recorded speaker per language folder.

## KTuberling words -> se/clean/ktuberling_*, se/test (held-out speakers)
- Debian package `ktuberling-data`, upstream https://invent.kde.org/games/ktuberling (sounds/).
- Licence: GPL-2+ (Copyright 2007-2017 Albert Astals Cid, 2000 KDE Team, 2000-2002 Meni Livne and the KDE
  contributors; see /usr/share/doc/ktuberling-data/copyright).

## espeak-ng synthetic voices -> se/clean/espeak_*
- Debian package `espeak-ng`, run by the builder on Allison's training sentences (generated output, no
  recording).
- Licence: the program is GPL-3+; we bundle its output under GPL-3+ to be safe.

## Synthetic noises -> se/noise/synthetic_*, the 60 Hz hum of se/test
- White, pink, brown noise and mains hum generated by `data/build_demo_data.py` (seeded).
- Licence: CC0 1.0 (public domain dedication).

## Ryan's Mammoth Collection (music21 corpus) -> ttm/audio
- PyPI package `music21` (BSD-3-Clause code), corpus folder `music21/corpus/ryansMammoth` (ABC
  transcriptions of William Bradbury Ryan's "Ryan's Mammoth Collection", Boston 1883, a public-domain
  publication; ABC contributed by Ray Davies and others, as named in each file's Z: line).
- music21/corpus/license.txt: "The music21 creators assume no copyright or change in licensing for content
  distributed in the corpus ... To the best of our knowledge, each piece of music in the corpus is either out
  of copyright in the United States or is licensed for use, though there may be restrictions on commercial
  use." The `source` field of each ttm row names the ABC file used.
- Rendered with abcmidi (`abc2midi`, James Allwright et al., GPL-2+) and FluidSynth (LGPL-2.1+) using the
  FluidR3_GM soundfont
  (Debian `fluid-soundfont-gm`, Copyright 2000-2002, 2008 Frank Wen, MIT licence). The instrument and tempo
  were chosen by us.
"""
    (out / "LICENSE.md").write_text(text)


def main() -> None:
    """Build the demo dataset (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo")
    parser.add_argument("--only", default="tta,ttm,se", help="comma-separated subset of tta,ttm,se")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("tta", "ttm", "se")]
    if bad:
        raise ValueError(f"--only got {bad}; expected a comma-separated subset of tta,ttm,se")
    needs = {"tta": ([SONIC_PI, LINCITY], []), "ttm": ([SOUNDFONT], ["abc2midi", "fluidsynth"]),
             "se": ([SONIC_PI, LINCITY, ALLISON, ALLISON_TEXT, KLETTRES, KTUBERLING], ["ffmpeg", "espeak-ng"])}
    missing = sorted({str(p) for part in parts for p in needs[part][0] if not p.exists()})
    missing += sorted({tool for part in parts for tool in needs[part][1] if shutil.which(tool) is None})
    if missing:
        raise FileNotFoundError(f"missing {missing}; install the Debian packages listed in the docstring of "
                                f"{__file__}")
    builders = {"tta": build_tta, "ttm": build_ttm, "se": build_se}
    for part in parts:
        shutil.rmtree(args.out / part, ignore_errors=True)
        result = builders[part](args.out)
        print(part, {k: len(v) if isinstance(v, list) else v for k, v in result.items()})
    if all((args.out / t).exists() for t in ("tta", "ttm", "se")):
        tta_rows = [json.loads(x) for s in ("train", "test")
                    for x in (args.out / "tta" / f"{s}.jsonl").open()]
        noise_rows = [json.loads(x) for x in (args.out / "se" / "noise_train.jsonl").open()]
        write_license(args.out, tta_rows, noise_rows)
        write_readme(args.out)
    print(f"total {sum(_du(args.out / t) for t in ('tta', 'ttm', 'se') if (args.out / t).exists()):,} bytes")


if __name__ == "__main__":
    main()
