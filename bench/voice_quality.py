"""Voice check: every prompt rendered as the kiosk renders it, measured clip by clip.

Each default prompt (core.outcomes.DEFAULT_PROMPTS) goes through the real PromptRenderer
(espeak-ng via pyttsx3 in a child process, then levelled and trimmed by
device.acting.audio.prepare) into a fresh temporary cache, and each cached WAV is measured:

  duration       seconds of audio (target ≤ 2.5 s: a tap every 3 s must not cut it off)
  LUFS           integrated loudness, ITU-R BS.1770 (pyloudnorm); the spread across prompts
                 is max - min (target ≤ 1 LU)
  peak dBFS      sample peak (the ceiling, -1 dBFS by default)
  lead ms        time from the clip's first sample to its first sample at or above -45 dBFS,
                 i.e. time to first sound once playback has started (target ≤ 30 ms); the
                 player's own start-up is tap_to_voice.py's business

The "raw" columns are espeak's output before levelling (the same child, run directly), for
comparison. --second-language adds the English prompts (device.acting.languages) with their
own voice and rate, and the length of each Chinese + English pair against the 3 s budget.

    .venv/bin/python bench/voice_quality.py [--rate 170] [--voice sit/cmn] [--lufs -20]
        [--peak -1] [--second-language] [--cache-dir DIR]

The last line is JSON: {"clips", "lufs_spread_lu", "max_duration_s",
"max_leading_silence_ms", "max_peak_dbfs"}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.outcomes import DEFAULT_PROMPTS
from device.acting import audio
from device.acting.voice import DEFAULT_RATE, DEFAULT_VOICE, MAX_PROMPT_S, PromptRenderer

MAX_SPREAD_LU = 1.0
MAX_LEADING_SILENCE_MS = 30.0


@dataclass(frozen=True)
class Prompt:
    """One text to render, with the voice and rate the kiosk would use for it."""

    name: str
    text: str
    voice: str
    rate: int


@dataclass(frozen=True)
class Measured:
    """A prompt's figures as cached, and espeak's raw ones."""

    prompt: Prompt
    clip: audio.ClipStats
    raw: audio.ClipStats


def prompts(args: argparse.Namespace) -> list[Prompt]:
    """The default Chinese prompts, then (on request) the second language's."""
    found = [Prompt(k, t, args.voice, args.rate) for k, t in DEFAULT_PROMPTS.items()]
    if args.second_language:
        from device.acting.languages import (
            DEFAULT_LANGUAGE_RATE,
            DEFAULT_LANGUAGE_VOICES,
            SECOND_LANGUAGE_PROMPTS,
        )

        for lang, texts in SECOND_LANGUAGE_PROMPTS.items():
            voice = DEFAULT_LANGUAGE_VOICES[lang]
            found += [
                Prompt(f"{k}.{lang}", t, voice, DEFAULT_LANGUAGE_RATE) for k, t in texts.items()
            ]
    return found


def raw_render(prompt: Prompt, out: Path) -> audio.ClipStats:
    """espeak's output as the render child writes it, before levelling."""
    argv = [sys.executable, "-m", "device.acting.voice", "render", "--voice", prompt.voice]
    argv += ["--rate", str(prompt.rate), "--out", str(out), "--", prompt.text]
    subprocess.run(argv, check=True, timeout=60, stdout=subprocess.DEVNULL)
    return audio.stats(audio.load_clip(out))


def measure(args: argparse.Namespace, cache: Path) -> list[Measured]:
    """Render every prompt through PromptRenderer into ``cache`` and measure the result."""
    results: list[Measured] = []
    for prompt in prompts(args):
        renderer = PromptRenderer(
            cache,
            voice=prompt.voice,
            rate=prompt.rate,
            loudness_lufs=args.lufs,
            peak_dbfs=args.peak,
        )
        clip = audio.stats(audio.load_clip(renderer.render(prompt.text)))
        raw = raw_render(prompt, cache / f"raw-{prompt.name}.wav")
        results.append(Measured(prompt, clip, raw))
    return results


def summary(results: list[Measured]) -> dict[str, Any]:
    """The final JSON line: worst figures across all clips."""
    lufs = [r.clip.lufs for r in results]
    return {
        "clips": len(results),
        "lufs_spread_lu": round(max(lufs) - min(lufs), 2),
        "max_duration_s": round(max(r.clip.duration_s for r in results), 3),
        "max_leading_silence_ms": round(max(r.clip.leading_silence_ms for r in results), 1),
        "max_peak_dbfs": round(max(r.clip.peak_dbfs for r in results), 2),
    }


def report(results: list[Measured], args: argparse.Namespace) -> dict[str, Any]:
    """Print the per-clip table and the targets; return the summary."""
    print(f"target {args.lufs:g} LUFS, peak ceiling {args.peak:g} dBFS")
    print(
        f"{'prompt':<22}{'dur s':>7}{'LUFS':>8}{'peak':>7}{'lead ms':>9}"
        f"   {'raw dur':>7}{'raw LUFS':>9}{'raw peak':>9}{'raw lead':>9}  text"
    )
    for r in results:
        c, w = r.clip, r.raw
        flag = " *" if c.duration_s > MAX_PROMPT_S else ""
        print(
            f"{r.prompt.name:<22}{c.duration_s:>7.2f}{c.lufs:>8.2f}{c.peak_dbfs:>7.2f}"
            f"{c.leading_silence_ms:>9.1f}   {w.duration_s:>7.2f}{w.lufs:>9.2f}"
            f"{w.peak_dbfs:>9.2f}{w.leading_silence_ms:>9.1f}  {r.prompt.text}{flag}"
        )
    pairs(results)
    result = summary(results)
    checks = [
        ("LUFS spread", result["lufs_spread_lu"], MAX_SPREAD_LU, "LU"),
        ("max duration", result["max_duration_s"], MAX_PROMPT_S, "s"),
        ("max leading silence", result["max_leading_silence_ms"], MAX_LEADING_SILENCE_MS, "ms"),
        ("max peak", result["max_peak_dbfs"], args.peak, "dBFS"),
    ]
    for name, value, limit, unit in checks:
        verdict = "ok" if value <= limit + 0.005 else "MISSED"  # 16-bit rounding of the peak
        print(f"{name:<22}{value:>8g} {unit:<5}target ≤ {limit:g}   {verdict}")
    if any(r.clip.duration_s > MAX_PROMPT_S for r in results):
        print(f"* longer than {MAX_PROMPT_S:g} s: shorten the text, raise --rate or record it")
    return result


def pairs(results: list[Measured]) -> None:
    """With --second-language: each Chinese prompt + gap + its translation vs the budget."""
    by_name = {r.prompt.name: r for r in results}
    joined = [(r, by_name[r.prompt.name.split(".")[0]]) for r in results if "." in r.prompt.name]
    if not joined:
        return
    from device.acting.languages import BUDGET_S, GAP_S

    print(f"pairs (Chinese, {GAP_S:g} s gap, second language; budget {BUDGET_S:g} s):")
    for second, first in joined:
        total = first.clip.duration_s + GAP_S + second.clip.duration_s
        verdict = "ok" if total <= BUDGET_S else "over: Chinese only"
        print(f"  {second.prompt.name:<22}{total:>6.2f} s   {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voice", default=DEFAULT_VOICE, help="espeak voice of the prompts")
    parser.add_argument("--rate", type=int, default=DEFAULT_RATE, help="words per minute")
    parser.add_argument("--lufs", type=float, default=-20.0, help="loudness target")
    parser.add_argument("--peak", type=float, default=-1.0, help="sample-peak ceiling, dBFS")
    parser.add_argument("--second-language", action="store_true", help="also the English prompts")
    parser.add_argument("--cache-dir", type=Path, help="keep the clips here (default: temp)")
    args = parser.parse_args()
    if args.cache_dir is not None:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        results = measure(args, args.cache_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="voice-quality-") as tmp:
            results = measure(args, Path(tmp))
    print(json.dumps(report(results, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
