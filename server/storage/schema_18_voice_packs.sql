-- migration: 18
-- Voice packs: the words and recorded clips admins send to kiosks (issue 16; server/voicepacks,
-- core/voicepack.py, docs/voice-packs.md).
--
-- One row per pack, named by the SHA-256 of its zip (so the same bytes are one pack). The
-- signature is the release key's over that hash (kept offline by the admin); the server
-- stores it to hand on and holds no key that could make one. A pack is at most 8 MiB, so
-- its bytes sit in the row; listing packs names the columns and never reads them.
-- only: sqlite
CREATE TABLE voice_packs (
    sha256        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    signature     TEXT NOT NULL,
    published_at  TEXT NOT NULL,
    published_by  TEXT NOT NULL,
    data          BLOB NOT NULL
);

-- only: postgresql
CREATE TABLE voice_packs (
    sha256        TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    signature     TEXT NOT NULL,
    published_at  TEXT NOT NULL,
    published_by  TEXT NOT NULL,
    data          BYTEA NOT NULL
);
