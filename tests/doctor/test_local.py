"""The kiosk's own files: bundle, key file, disk space, journal backlog, prompt cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

from device.acting.voice import PromptRenderer
from device.doctor import Thresholds, UserInfo
from device.recording.journal import Journal
from tests.doctor.conftest import Kiosk, render_prompts


async def test_a_missing_bundle_fails_config_and_key_file(kiosk: Kiosk) -> None:
    Path(kiosk.config.bundle).unlink()
    report = await kiosk.run()
    config = report.by_name("config")
    assert config.status == "fail" and "cannot read device bundle" in config.detail
    assert "kiosk provision add" in config.fix
    assert report.status("key_file") == "fail"
    # Nothing to sign in with: the server is still asked, the session is not.
    assert report.status("session") == "warn"
    assert not report.ok


async def test_a_broken_bundle_names_what_is_wrong(kiosk: Kiosk) -> None:
    path = Path(kiosk.config.bundle)
    data = json.loads(path.read_text())
    data["private_key"] = "zz"
    path.write_text(json.dumps(data))
    check = (await kiosk.run()).by_name("config")
    assert check.status == "fail" and "private_key" in check.detail


async def test_a_key_file_others_can_read_fails_with_chmod(kiosk: Kiosk) -> None:
    bundle = Path(kiosk.config.bundle)
    bundle.chmod(0o644)
    check = (await kiosk.run()).by_name("key_file")
    assert check.status == "fail" and "0644" in check.detail
    assert check.fix == f"chmod 600 {bundle}"


async def test_a_pending_rotation_key_is_held_to_the_same_rule(kiosk: Kiosk) -> None:
    pending = Path(kiosk.config.bundle + ".next-key")
    pending.write_text("00" * 32)
    pending.chmod(0o640)
    check = (await kiosk.run()).by_name("key_file")
    assert check.status == "fail" and f"chmod 600 {pending}" in check.fix


async def test_a_key_file_of_another_user_fails_with_chown(kiosk: Kiosk) -> None:
    agent = UserInfo("siheyi", os.geteuid() + 4242, frozenset({os.getegid() + 4242}))
    report = await kiosk.run(probes=kiosk.probes(user=lambda: agent))
    check = report.by_name("key_file")
    assert check.status == "fail" and check.fix == f"chown siheyi {kiosk.config.bundle}"


class _Vfs:
    """A statvfs answer: ``free`` of ``total`` blocks of 4 KiB."""

    def __init__(self, free: int, total: int) -> None:
        self.f_bavail, self.f_blocks, self.f_frsize = free, total, 4096


async def test_a_nearly_full_disk_warns_then_fails(kiosk: Kiosk) -> None:
    gib = 2**30 // 4096
    seen: list[str] = []

    def statvfs(free: int) -> object:
        def probe(path: str) -> _Vfs:
            seen.append(path)
            return _Vfs(free, 16 * gib)

        return probe

    full = await kiosk.run(probes=kiosk.probes(statvfs=statvfs(10 * 2**20 // 4096)))
    check = full.by_name("disk")
    assert check.status == "fail" and "10 MiB free" in check.detail and check.fix
    assert seen and Path(seen[0]) in (Path(kiosk.config.state_dir), kiosk.tmp_path)
    low = await kiosk.run(probes=kiosk.probes(statvfs=statvfs(gib // 2 - 1)))
    assert low.status("disk") == "warn"
    roomy = await kiosk.run(probes=kiosk.probes(statvfs=statvfs(8 * gib)))
    assert roomy.status("disk") == "ok"


async def _journal(kiosk: Kiosk, events: int, dead: int = 0) -> None:
    bundle = json.loads(Path(kiosk.config.bundle).read_text())
    journal = Journal(Path(kiosk.config.state_dir) / "journal.db", bundle["device_id"], "boot-1")
    async with journal:
        appended = [
            await journal.append({"kind": "system", "clock_trusted": False}) for _ in range(events)
        ]
        for event in appended[:dead]:
            await journal.dead_letter(event, "400 bad_request: refused")


async def test_journal_backlog_thresholds(kiosk: Kiosk) -> None:
    await _journal(kiosk, 3)
    calm = await kiosk.run()
    assert (
        calm.status("journal") == "ok" and "3 events not uploaded" in calm.by_name("journal").detail
    )
    busy = await kiosk.run(thresholds=Thresholds(backlog_warn_events=3))
    assert busy.status("journal") == "warn"
    stuck = await kiosk.run(thresholds=Thresholds(backlog_warn_events=2, backlog_fail_events=3))
    check = stuck.by_name("journal")
    assert check.status == "fail" and "server" in check.fix
    old = await kiosk.run(thresholds=Thresholds(backlog_fail_age_s=1e-6))
    assert old.status("journal") == "fail"


async def test_dead_letters_warn(kiosk: Kiosk) -> None:
    await _journal(kiosk, 2, dead=1)
    check = (await kiosk.run()).by_name("journal")
    assert check.status == "warn" and "1 dead letters" in check.detail


async def test_doctor_leaves_the_journal_as_it_found_it(kiosk: Kiosk) -> None:
    await kiosk.run()
    assert not Path(kiosk.config.state_dir).exists()  # no journal was created


async def test_an_unrendered_prompt_fails(kiosk: Kiosk) -> None:
    clips = render_prompts(kiosk.config)
    clips[0].unlink()
    clips[1].write_bytes(b"RIFF....WAVEfmt ")  # what a crashed engine leaves behind
    report = await kiosk.run()
    check = report.by_name("prompts")
    assert check.status == "fail" and check.detail.startswith("2 of ")
    assert "espeak-ng" in check.fix
    assert clips[1].exists()  # reported, not deleted: doctor changes nothing


async def test_a_clear_id_number_never_appears_in_the_report(kiosk: Kiosk) -> None:
    clear = "11010519491231002X"
    config = kiosk.configured(state_dir=str(kiosk.tmp_path / clear))
    report = await kiosk.run(config)
    text = json.dumps(report.as_dict())
    assert clear not in text
    assert "1101**********002X" in report.by_name("journal").detail


def _speech_like(path: Path, seconds: float, level: float = 0.3) -> Path:
    import numpy as np
    import soundfile

    rate = 16000
    t = np.arange(int(rate * seconds)) / rate
    tone = level * np.sin(2 * np.pi * 300 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    soundfile.write(path, tone.astype(np.float32), rate)
    return path


async def test_a_recorded_clip_stands_in_for_its_prompt(kiosk: Kiosk) -> None:
    clips = render_prompts(kiosk.config)
    clips[0].unlink()  # 绿码通行 is not rendered: the recording plays instead
    good = _speech_like(kiosk.tmp_path / "pass.flac", 1.2)
    config = kiosk.configured(voice={"clips": {"pass": str(good)}})
    check = (await kiosk.run(config)).by_name("prompts")
    assert check.status == "ok", check
    assert check.detail.endswith(", 1 recorded")


async def test_a_recorded_clip_the_agent_will_not_play_is_named(kiosk: Kiosk) -> None:
    render_prompts(kiosk.config)
    long = _speech_like(kiosk.tmp_path / "check.wav", 3.0)
    silent = _speech_like(kiosk.tmp_path / "pass-en.ogg", 1.0, level=0.0)
    clips = {"check": str(long), "pass.en": str(silent)}
    check = (await kiosk.run(kiosk.configured(voice={"clips": clips}))).by_name("prompts")
    assert check.status == "warn", check
    assert f"{long}: too long" in check.detail and f"{silent}: silent" in check.detail
    assert "[voice.clips]" in check.fix


async def test_the_prompts_check_follows_the_installed_voice_pack(kiosk: Kiosk) -> None:
    """The agent speaks a pack's words and clips (signed, installed, named by the saved remote
    settings): doctor checks those, not kiosk.toml's, so a pack that changed the words is not
    reported as missing prompts (which would also fail an update's trial)."""
    from device.acting.packs import RemoteVoice, pack_store
    from tests.device.packkit import release_key, signed_pack
    from tests.doctor.conftest import write_wav

    key, public = release_key()
    silent = _speech_like(kiosk.tmp_path / "nat_expired.wav", 1.0, level=0.0)
    good = _speech_like(kiosk.tmp_path / "pass.flac", 1.2)
    pack = signed_pack(key, {"pass": good, "nat_expired": silent}, {"check": "请到人工通道"})
    config = kiosk.configured(update={"release_key": public})
    store = pack_store(Path(config.state_dir))
    store.install(pack.data, pack.signature, public)
    store.save_settings(RemoteVoice(pack=pack.sha256))

    check = (await kiosk.run(config)).by_name("prompts")
    assert check.status == "fail" and "'请到人工通道'" in check.detail, check
    renderer = PromptRenderer.for_settings(Path(config.voice.cache_dir), config.voice)
    write_wav(renderer.path_for("请到人工通道"))
    check = (await kiosk.run(config)).by_name("prompts")
    assert check.status == "warn", check
    assert f"voice pack test-words@{pack.sha256[:12]}" in check.detail
    assert "nat_expired.wav: silent" in check.detail and "voice pack" in check.fix
