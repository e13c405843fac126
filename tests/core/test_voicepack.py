"""Voice packs (core/voicepack.py): what an admin builds is what every reader accepts, byte
for byte, and every archive a reader must not trust is refused with VoicePackError, never
another exception (the server turns VoicePackError into a 400; anything else is a 500, and
on a kiosk a crash of the agent's config step)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.errors import SettingError
from core.releases import ReleaseError, sign_release, verify_release
from core.voicepack import (
    MANIFEST,
    MAX_KEYS,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    MAX_PACK_BYTES,
    MAX_PROMPT_CHARS,
    VoicePackError,
    build_pack,
    check_sha256,
    pack_message,
    pack_sha256,
    read_pack,
    sign_pack,
    verify_pack,
)

#: A fixed key: its public half is in test ids, which every pytest-xdist worker must agree on.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key().public_bytes_raw().hex()
_TIME = (2020, 1, 1, 0, 0, 0)


def _clips(folder: Path) -> dict[str, Path]:
    """Three clip files of different formats (their bytes need not be real audio: the pack
    carries files, the kiosk decodes them)."""
    files = {"pass": "a.wav", "pass.en": "b.FLAC", "check": "c.ogg"}
    for n, (key, name) in enumerate(files.items()):
        (folder / name).write_bytes(f"RIFF{key}".encode() * (100 + n))
    return {key: folder / name for key, name in files.items()}


def zipped(members: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = 8) -> bytes:
    """An archive of ``members`` (name or ZipInfo, bytes), deflated by default."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in members:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name, _TIME)
            info.compress_type = method  # a ZipInfo is written as it says (stored by default)
            archive.writestr(info, data)
    return out.getvalue()


def manifest(**changes: Any) -> bytes:
    """A valid ``pack.json`` naming ``pass.wav``, with ``changes``."""
    document = {"format": 1, "name": "spring", "clips": {"pass": "pass.wav"}, "prompts": {}}
    return json.dumps({**document, **changes}).encode()


def pack_with(**changes: Any) -> bytes:
    return zipped([(MANIFEST, manifest(**changes)), ("pass.wav", b"RIFF....")])


# -- build and read -------------------------------------------------------------------------


def test_a_built_pack_reads_back_as_built(tmp_path: Path) -> None:
    clips = _clips(tmp_path)
    prompts = {"check": "请核查", "pass.en": "Welcome"}
    data = build_pack("spring-2027", clips, prompts)
    pack = read_pack(data)
    assert pack.manifest.name == "spring-2027"
    assert dict(pack.manifest.clips) == {
        "check": "check.ogg", "pass": "pass.wav", "pass.en": "pass.en.flac"
    }  # fmt: skip
    assert dict(pack.manifest.prompts) == prompts
    assert {k: v for k, v in pack.clips.items()} == {k: p.read_bytes() for k, p in clips.items()}
    assert pack.sha256 == pack_sha256(data) and len(pack.sha256) == 64


def test_the_same_inputs_build_the_same_bytes(tmp_path: Path) -> None:
    """A rebuilt pack has the same SHA-256, so publishing it again changes nothing; the
    order the clips and prompts are given in and the files' times do not matter."""
    clips = _clips(tmp_path)
    first = build_pack("p", clips, {"check": "请核查", "fault": "no"})
    for path in clips.values():
        path.touch()  # a newer mtime
    again = build_pack("p", dict(reversed(list(clips.items()))), {"fault": "no", "check": "请核查"})
    assert again == first
    assert build_pack("p", clips, {"check": "请核查 "}) != first  # the words are in the hash


def test_an_empty_pack_has_a_name_only(tmp_path: Path) -> None:
    pack = read_pack(build_pack("empty", {}, {}))
    assert (pack.manifest.name, dict(pack.clips), dict(pack.manifest.prompts)) == ("empty", {}, {})


@pytest.mark.parametrize(
    ("name", "clip", "prompts", "says"),
    [
        ("bad name", "a.wav", {}, "name"),
        ("../up", "a.wav", {}, "name"),
        ("ok", "a.mp3", {}, "not allowed"),
        ("ok", "a.wav", {"passed": "x"}, "not an outcome"),
        ("ok", "a.wav", {"check": ""}, "1-200"),
        ("ok", "a.wav", {"check": "x" * (MAX_PROMPT_CHARS + 1)}, "1-200"),
    ],
)
def test_build_refuses_what_readers_refuse(
    tmp_path: Path, name: str, clip: str, prompts: dict[str, str], says: str
) -> None:
    (tmp_path / clip).write_bytes(b"RIFF")
    with pytest.raises(VoicePackError, match=says):
        build_pack(name, {"pass": tmp_path / clip}, prompts)


def test_build_refuses_a_clip_key_that_is_no_outcome(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    with pytest.raises(VoicePackError):
        build_pack("ok", {"welcome": tmp_path / "a.wav"}, {})


def test_build_refuses_a_clip_over_the_member_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (MAX_MEMBER_BYTES + 1))
    with pytest.raises(VoicePackError, match="a clip may have"):
        build_pack("ok", {"pass": big}, {})


def test_a_pack_over_the_total_limit_is_refused_before_it_is_opened() -> None:
    with pytest.raises(VoicePackError, match="at most"):
        read_pack(b"PK" + b"\0" * MAX_PACK_BYTES)


# -- what a reader refuses ------------------------------------------------------------------


def _refused(data: bytes, says: str) -> None:
    with pytest.raises(VoicePackError, match=says):
        read_pack(data)


def test_a_valid_handmade_pack_is_accepted() -> None:
    """The baseline the refusals below change one thing of."""
    assert read_pack(pack_with()).clips["pass"] == b"RIFF...."


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04" + b"\0" * 40])
def test_what_is_not_a_zip_is_refused(data: bytes) -> None:
    _refused(data, "not a readable zip")


def test_too_many_members_are_refused() -> None:
    members = [(f"m{i}.wav", b"x") for i in range(MAX_MEMBERS)]
    _refused(zipped([(MANIFEST, manifest()), *members]), f"at most {MAX_MEMBERS}")


@pytest.mark.parametrize(
    "name",
    ["../pass.wav", "/pass.wav", "sub/pass.wav", "sub/", "clips\\pass.wav", ".pass.wav",
     "pass.mp3", "pass", "päss.wav"],
)  # fmt: skip
def test_paths_dirs_and_odd_names_are_refused(name: str) -> None:
    info = zipfile.ZipInfo("x.wav", _TIME)
    info.filename = name  # as written into the archive, unnormalised
    _refused(zipped([(MANIFEST, manifest()), ("pass.wav", b"x"), (info, b"x")]), "not allowed")


def test_a_member_twice_is_refused() -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = zipped([(MANIFEST, manifest()), ("pass.wav", b"a"), ("pass.wav", b"b")])
    _refused(data, "appears twice")


def test_a_pack_without_its_manifest_is_refused() -> None:
    _refused(zipped([("pass.wav", b"x")]), f"no {MANIFEST}")


def test_a_member_declared_too_large_is_refused() -> None:
    _refused(
        zipped([(MANIFEST, manifest()), ("pass.wav", b"\0" * (MAX_MEMBER_BYTES + 1))]),
        "larger than",
    )


def _lie_about_size(data: bytes, member: str, size: int) -> bytes:
    """``data`` with ``member``'s uncompressed size in both its headers set to ``size``."""
    out = bytearray(data)
    name = member.encode()
    at = 0
    while (at := data.find(b"PK\x03\x04", at)) >= 0:
        if data[at + 30 : at + 30 + len(name)] == name:
            struct.pack_into("<I", out, at + 22, size)
        at += 4
    at = 0
    while (at := data.find(b"PK\x01\x02", at)) >= 0:
        if data[at + 46 : at + 46 + len(name)] == name:
            struct.pack_into("<I", out, at + 24, size)
        at += 4
    return bytes(out)


def test_a_zip_bomb_whose_header_lies_is_refused() -> None:
    """3 MiB of zeros deflate to a few KB; the headers claim 100 bytes. The reader stops at
    the claimed size and the CRC no longer matches: refused without inflating the rest."""
    data = zipped([(MANIFEST, manifest()), ("pass.wav", b"\0" * (3 * 1024 * 1024))])
    assert len(data) < 20_000
    _refused(_lie_about_size(data, "pass.wav", 100), "not a readable zip")


def test_a_manifest_whose_header_lies_is_refused() -> None:
    data = zipped([(MANIFEST, manifest() + b" " * (3 * 1024 * 1024)), ("pass.wav", b"x")])
    _refused(_lie_about_size(data, MANIFEST, 10), "not a readable zip")


def _flip(data: bytes, member: str, offset: int, junk: bytes) -> bytes:
    """``data`` with ``junk`` written ``offset`` bytes into ``member``'s stored data."""
    name = member.encode()
    at = 0
    while (at := data.find(b"PK\x03\x04", at)) >= 0:
        if data[at + 30 : at + 30 + len(name)] == name:
            start = at + 30 + len(name) + struct.unpack_from("<H", data, at + 28)[0] + offset
            return data[:start] + junk + data[start + len(junk) :]
        at += 4
    raise AssertionError(member)


def test_a_truncated_pack_is_refused() -> None:
    data = pack_with()
    _refused(data[: len(data) // 2], "not a readable zip")


def test_a_corrupt_deflate_stream_is_refused() -> None:
    data = zipped([(MANIFEST, manifest()), ("pass.wav", b"A" * 5000)])
    _refused(_flip(data, "pass.wav", 0, b"\xff\xff\xff\xff"), "voice pack")


def _set_flags(data: bytes, member: str, *, flag: int = 0, method: int | None = None) -> bytes:
    out = bytearray(data)
    name = member.encode()
    for signature, name_at, flag_at in ((b"PK\x03\x04", 30, 6), (b"PK\x01\x02", 46, 8)):
        at = 0
        while (at := data.find(signature, at)) >= 0:
            if data[at + name_at : at + name_at + len(name)] == name:
                out[at + flag_at] |= flag
                if method is not None:
                    struct.pack_into("<H", out, at + flag_at + 2, method)
            at += 4
    return bytes(out)


def test_an_encrypted_member_is_refused() -> None:
    _refused(_set_flags(pack_with(), "pass.wav", flag=1), "voice pack")


@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, 99])
def test_a_compression_other_than_deflate_is_refused(method: int) -> None:
    """LZMA (whose corrupt data raises LZMAError) and methods zipfile does not know."""
    data = zipped([(MANIFEST, manifest()), ("pass.wav", b"A" * 5000)], method=zipfile.ZIP_LZMA)
    if method == 99:
        data = _set_flags(data, "pass.wav", method=99)
    else:
        data = _flip(data, "pass.wav", 10, b"\xff" * 10)
    _refused(data, "voice pack")


def test_a_deeply_nested_manifest_is_refused() -> None:
    _refused(zipped([(MANIFEST, b"[" * 100_000 + b"]" * 100_000)]), "voice pack")


def test_format_true_is_not_format_1() -> None:
    _refused(pack_with(format=True), "format")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (zipped([(MANIFEST, b"\xff\xfe")]), "not JSON"),
        (zipped([(MANIFEST, b"{")]), "not JSON"),
        (zipped([(MANIFEST, b"[]")]), "must be an object"),
        (pack_with(format=2), "format 2"),
        (pack_with(format="1"), "format"),
        (zipped([(MANIFEST, b'{"name": "x"}')]), "format None"),
        (pack_with(name=""), "name"),
        (pack_with(name="a b"), "name"),
        (pack_with(name=7), "name"),
        (pack_with(name="x" * 65), "name"),
        (pack_with(clips=[]), "clips must be an object"),
        (pack_with(prompts="hi"), "prompts must be an object"),
        (pack_with(clips={"welcome": "pass.wav"}), "not an outcome"),
        (pack_with(clips={"pass.EN": "pass.wav"}), "not an outcome"),
        (pack_with(prompts={"pass.english": "hi"}), "not an outcome"),
        (pack_with(clips={"pass": "../pass.wav"}), "a file name in the pack"),
        (pack_with(clips={"pass": 3}), "a file name in the pack"),
        (pack_with(clips={"pass": "fail.wav"}), "not in the pack"),
        (pack_with(clips={"pass": MANIFEST}), "a file name in the pack"),
        (pack_with(prompts={"check": "   "}), "1-200"),
        (pack_with(prompts={"check": None}), "1-200"),
    ],
)
def test_a_bad_manifest_is_refused(data: bytes, says: str) -> None:
    _refused(data, says)


def test_the_manifest_is_not_a_clip() -> None:
    """``pack.json`` matches no audio name; a manifest naming it as a clip is refused by the
    name check, and a member named like the manifest elsewhere cannot exist."""
    with pytest.raises(VoicePackError):
        read_pack(pack_with(clips={"pass": "pack.json"}))


def test_errors_are_setting_errors() -> None:
    """Callers that already turn a SettingError into a refusal need nothing new."""
    assert issubclass(VoicePackError, SettingError)


# -- signatures -----------------------------------------------------------------------------

SHA = pack_sha256(b"a pack")


def test_a_pack_signature_verifies_with_the_release_key() -> None:
    signature = sign_pack(KEY, SHA)
    assert len(signature) == 128
    verify_pack(PUBLIC, SHA, signature)


def test_another_key_another_pack_or_a_bent_signature_is_refused() -> None:
    signature = sign_pack(KEY, SHA)
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    with pytest.raises(VoicePackError, match="not signed by the pinned release key"):
        verify_pack(other, SHA, signature)
    with pytest.raises(VoicePackError, match="not signed"):
        verify_pack(PUBLIC, pack_sha256(b"another pack"), signature)
    bent = ("0" if signature[0] != "0" else "1") + signature[1:]
    with pytest.raises(VoicePackError, match="not signed"):
        verify_pack(PUBLIC, SHA, bent)


def test_a_release_signature_over_the_same_hash_is_not_a_pack_signature() -> None:
    """The purpose tag keeps the two apart: a signed wheel whose SHA-256 equals a pack's
    cannot be replayed as that pack, and a pack signature is no release."""
    release_signature = sign_release(KEY, "1.0.0", "siheyi-1.0.0-py3-none-any.whl", SHA)
    with pytest.raises(VoicePackError, match="not signed"):
        verify_pack(PUBLIC, SHA, release_signature)
    with pytest.raises(ReleaseError):
        verify_release(PUBLIC, "1.0.0", "siheyi-1.0.0-py3-none-any.whl", SHA, sign_pack(KEY, SHA))
    assert pack_message(SHA) == f"siheyi-voice-pack-v1\n{SHA}".encode()


@pytest.mark.parametrize(
    ("public", "signature", "says"),
    [
        ("ab" * 31, "0" * 128, "release key is not 64 hex"),
        ("AB" * 32, "0" * 128, "release key is not 64 hex"),
        (PUBLIC, "0" * 127, "128 hex"),
        (PUBLIC, "Z" * 128, "128 hex"),
        (PUBLIC, "0" * 128, "not signed"),
    ],
)
def test_malformed_keys_and_signatures_are_refused(public: str, signature: str, says: str) -> None:
    with pytest.raises(VoicePackError, match=says):
        verify_pack(public, SHA, signature)


@pytest.mark.parametrize("value", ["", "ab" * 31, "AB" * 32, SHA + "\n", 7, None])
def test_a_pack_reference_is_64_lower_case_hex_digits(value: object) -> None:
    with pytest.raises(VoicePackError, match="64 hex digits"):
        check_sha256(value)
    with pytest.raises(VoicePackError):
        sign_pack(KEY, str(value))
    assert check_sha256(SHA) == SHA


def _keys(count: int) -> list[str]:
    """``count`` distinct valid keys: outcomes in made-up two-letter languages."""
    languages = [a + b for a in "abcdefghij" for b in "abcdefghij"]
    return [f"pass.{lang}" for lang in languages][:count]


def test_keys_naming_one_member_read_it_once() -> None:
    """A small archive whose manifest names one 2 MiB member under every key must not
    decompress it once per key (that took 2 GB for 1,000 keys before the fix)."""
    big = b"\0" * MAX_MEMBER_BYTES
    clips = dict.fromkeys(_keys(MAX_KEYS), "a.wav")
    pack = read_pack(zipped([(MANIFEST, manifest(clips=clips)), ("a.wav", big)]))
    assert len(pack.clips) == MAX_KEYS
    assert len({id(data) for data in pack.clips.values()}) == 1  # one copy, shared


@pytest.mark.parametrize("what", ["clips", "prompts"])
def test_more_keys_than_a_pack_can_use_are_refused(what: str) -> None:
    keys = _keys(MAX_KEYS + 1)
    value = dict.fromkeys(keys, "pass.wav" if what == "clips" else "words")
    _refused(pack_with(**{what: value}), f"{MAX_KEYS + 1} {what}, at most {MAX_KEYS}")
