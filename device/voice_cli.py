"""``kiosk voice test --config kiosk.toml``: play every prompt on this kiosk's speaker, in turn.

An installer checks the voice by ear at the gate: is it loud enough over the station's noise,
is each phrase clear on the first hearing, are the recorded clips the right ones. The prompts
are made exactly as the agent makes them (same renderer, recorded clips, loudness, volume
schedule, second language) and played through the configured player, one after another, each
to its end plus a pause. Stop the agent first: the sound device is usually exclusive. Run it
as the agent's user (``sudo -u siheyi``): it renders into the agent's prompt cache.

Exit status: 0 when every prompt played, 1 when one could not be rendered or played, 2 when
the configuration cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from core.outcomes import DEFAULT_PROMPTS
from device.acting.clips import clip_key
from device.acting.voice import Player, Voice, check_wav, make_player
from device.config import DeviceConfig
from device.errors import ConfigError, PlayerError, VoiceError
from device.runtime import voice_for


@dataclass(frozen=True)
class Prompt:
    """One thing the kiosk may say: its key, text, outcome and the card that hears it."""

    key: str
    text: str
    outcome: str | None
    card_type: str = "resident"


def prompts_to_test(voice: Voice) -> list[Prompt]:
    """Every configured prompt, then each outcome joined with a second language per card
    type that hears one (I, Y; J where a site turned it on)."""
    out = [
        Prompt(key, text, key if key in DEFAULT_PROMPTS else None)
        for key, text in voice.prompts.items()
    ]
    second = voice.second_language
    if second is None:
        return out
    for card_type, lang in sorted(second.card_languages.items()):
        for key, text in voice.prompts.items():
            if lang and key in DEFAULT_PROMPTS and second.clip_for(text, card_type) is not None:
                out.append(
                    Prompt(f"{clip_key(key, lang)} ({card_type} card)", text, key, card_type)
                )
    return out


def _source(voice: Voice, clip: Path, prompt: Prompt) -> str:
    if prompt.card_type != "resident":
        return "joined"
    return "recorded" if clip in voice.recorded.values() else "synthesised"


async def play_all(
    voice: Voice,
    *,
    pause_s: float,
    out: TextIO,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """Play each prompt to its end; the number that could not be played."""
    try:
        await voice.start()
    except VoiceError as exc:  # the rest are ready: play them, report the missing ones
        print(f"warning: {exc}", file=out, flush=True)
    failed = 0
    prompts = prompts_to_test(voice)
    for n, prompt in enumerate(prompts, 1):
        clip = voice.clip_for(prompt.text, prompt.outcome, prompt.card_type)
        head = f"[{n}/{len(prompts)}] {prompt.key:<28}"
        if clip is None:
            failed += 1
            print(f"{head} NOT RENDERED  {prompt.text}", file=out, flush=True)
            continue
        seconds = check_wav(clip)
        label = f"{_source(voice, clip, prompt):<11} {seconds:4.2f} s"
        print(f"{head} {label}  {prompt.text}", file=out, flush=True)
        try:
            await voice.say(prompt.text, outcome=prompt.outcome, card_type=prompt.card_type)
        except (VoiceError, PlayerError) as exc:
            failed += 1
            print(f"{'':<{len(head)}} FAILED: {exc}", file=out, flush=True)
            continue
        await sleep(seconds + pause_s)
    return failed


async def voice_test(
    config: DeviceConfig,
    *,
    player: Player | None = None,
    pause_s: float = 0.8,
    out: TextIO,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """Exit status of `kiosk voice test` for `config`."""
    voice = voice_for(config, Path(config.state_dir), player)
    try:
        failed = await play_all(voice, pause_s=pause_s, out=out, sleep=sleep)
    finally:
        await voice.close()
    verdict = "every prompt played" if not failed else f"{failed} prompt(s) not played"
    print(f"voice test: {verdict}", file=out)
    return 1 if failed else 0


def foreign_owner(state_dir: Path, euid: int) -> str | None:
    """The user owning the kiosk's state when it is not the one running this, else None.

    The test renders into the agent's prompt cache: run as root it would leave root-owned
    files and folders there that the agent, running as its own user, then cannot write to
    (so new words from a voice pack could not be rendered).
    """
    try:
        owner = state_dir.stat().st_uid
    except OSError:
        return None  # no state yet: nothing to spoil
    if owner == euid:
        return None
    try:
        return pwd.getpwuid(owner).pw_name
    except KeyError:
        return str(owner)


def _run(args: argparse.Namespace) -> int:
    try:
        config = DeviceConfig.load(args.config)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    owner = foreign_owner(Path(config.state_dir), os.geteuid())
    if owner is not None:
        hint = f"sudo -u {owner} kiosk voice test --config {args.config}"
        print(f"error: {config.state_dir} belongs to {owner}: run the test as that user,"
              f" e.g. {hint}", file=sys.stderr)  # fmt: skip
        return 2
    player = make_player(args.player) if args.player else None
    return asyncio.run(voice_test(config, player=player, pause_s=args.pause, out=sys.stdout))


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add `voice test` to the `kiosk` command line; return the `voice` verbs, to which the
    admin's `voice pack` (provisioning/voice_cli.py) is added."""
    voice = sub.add_parser(
        "voice", help="the kiosk's spoken prompts: test them by ear, publish new words"
    )
    verbs = voice.add_subparsers(dest="verb", required=True)
    test = verbs.add_parser(
        "test", help="play every prompt on this kiosk's speaker, in turn, to check by ear"
    )
    test.add_argument("--config", type=Path, required=True, help="the kiosk's kiosk.toml")
    test.add_argument(
        "--player",
        metavar="SPEC",
        help="override voice.player (aplay, aplay:DEVICE, null, file:DIR, mock)",
    )
    test.add_argument(
        "--pause",
        type=float,
        default=0.8,
        metavar="S",
        help="silence between prompts, seconds (default 0.8)",
    )
    test.set_defaults(func=_run)
    return verbs
