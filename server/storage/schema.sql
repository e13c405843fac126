-- Siheyi server schema, as numbered migrations; SQLite and PostgreSQL run the same ones.
--
-- Each migration starts with a line "-- migration: N" and runs in one transaction; the
-- applied version is recorded in schema_version. This file holds 1-7; each later migration
-- has a file of its own, schema_NN_what.sql, read in name order. Keep the SQL portable:
-- plain types (REAL becomes DOUBLE PRECISION on PostgreSQL), no AUTOINCREMENT, no
-- backend-only functions. A statement containing the line "-- only: sqlite" or
-- "-- only: postgresql" runs on that backend alone. Timestamps are ISO 8601 text in UTC with
-- an explicit offset, so text order is time order. Booleans are 0/1 integers.

-- migration: 1

-- Source data: the only place a clear ID number is stored.
CREATE TABLE health_codes (
    id_number   TEXT PRIMARY KEY,
    colour      TEXT NOT NULL CHECK (colour IN ('green', 'yellow', 'red')),
    reason      TEXT NOT NULL DEFAULT '',
    updated_at  TEXT NOT NULL
);

CREATE TABLE nat_results (
    id_number   TEXT NOT NULL,
    sampled_at  TEXT NOT NULL,
    result      TEXT NOT NULL CHECK (result IN ('negative', 'positive')),
    lab         TEXT NOT NULL DEFAULT ''
);
-- Doubles as the lookup index (latest result per person) and the upsert key.
CREATE UNIQUE INDEX nat_results_person_time ON nat_results (id_number, sampled_at);

CREATE TABLE vaccinations (
    id_number     TEXT NOT NULL,
    dose          INTEGER NOT NULL CHECK (dose >= 1),
    vaccinated_at TEXT NOT NULL,
    vaccine       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (id_number, dose)
);

CREATE TABLE travel (
    id_number   TEXT PRIMARY KEY,
    flagged     INTEGER NOT NULL CHECK (flagged IN (0, 1)),
    area        TEXT NOT NULL DEFAULT '',
    updated_at  TEXT NOT NULL
);

-- Fleet and devices.
CREATE TABLE sites (
    site TEXT PRIMARY KEY
);

CREATE TABLE fleet (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    fleet_key   TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE devices (
    device_id       TEXT PRIMARY KEY,
    serial          TEXT NOT NULL UNIQUE,
    site            TEXT NOT NULL,
    gate            TEXT NOT NULL DEFAULT '',
    location        TEXT NOT NULL DEFAULT '',
    secret_sha256   TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at      TEXT NOT NULL,
    last_seen_at    TEXT,
    last_heartbeat  TEXT
);

-- Audit: masked numbers and pseudonyms only, never a clear ID number.
CREATE TABLE audit_events (
    device_id     TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    wall_time     TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    outcome       TEXT,
    prompt        TEXT,
    masked_id     TEXT,
    pseudonym     TEXT,
    offline       INTEGER NOT NULL,
    cache_age_s   REAL,
    latency_ms    REAL,
    boot_id       TEXT NOT NULL,
    mono_ns       BIGINT NOT NULL,
    clock_trusted INTEGER NOT NULL,
    detail        TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL,
    -- 1 verified, 0 broken (bad hash or prev_hash mismatch), NULL predecessor not yet received
    chain_ok      INTEGER,
    UNIQUE (device_id, seq)
);

-- Per-device high-water mark: every event 1..acked_seq is stored.
CREATE TABLE audit_progress (
    device_id   TEXT PRIMARY KEY,
    acked_seq   BIGINT NOT NULL
);

-- migration: 2

-- Audit events whose (device_id, seq) was already stored with a different hash, e.g. a kiosk
-- whose journal was reset (SD card swap) and starts again at seq 1 under the same device id.
-- Kept in full so nothing the kiosk deletes after the acknowledgement is lost; the first
-- version stays in audit_events. hash_ok: 1 when the event's own hash verified.
CREATE TABLE audit_conflicts (
    device_id     TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    received_at   TEXT NOT NULL,
    wall_time     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    outcome       TEXT,
    prompt        TEXT,
    masked_id     TEXT,
    pseudonym     TEXT,
    offline       INTEGER NOT NULL,
    cache_age_s   REAL,
    latency_ms    REAL,
    boot_id       TEXT NOT NULL,
    mono_ns       BIGINT NOT NULL,
    clock_trusted INTEGER NOT NULL,
    detail        TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL,
    hash_ok       INTEGER NOT NULL,
    UNIQUE (device_id, seq, hash)
);

-- migration: 3

-- The people expected at each site: who goes into the site's signed snapshot (GET
-- /v1/snapshot). Filled by `kiosk server import site_people FILE.csv`.
CREATE TABLE site_people (
    site        TEXT NOT NULL,
    id_number   TEXT NOT NULL,
    PRIMARY KEY (site, id_number)
);

-- The server's own signing keys (Ed25519, raw 32-byte keys as hex), created on first use.
-- name 'snapshot' signs site snapshots; its public key goes into every device bundle. The
-- private key never leaves this table.
CREATE TABLE server_keys (
    name        TEXT PRIMARY KEY,
    private_key TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- migration: 4

-- Health-code QR tokens resolved locally (POST /v1/verify with kind "qr"). The token itself
-- is never stored: only SHA-256 of its UTF-8 bytes, lower-case hex. Filled by
-- `kiosk server import qr_token FILE.csv`; a row past expires_at resolves to nobody.
CREATE TABLE qr_tokens (
    token_sha256 TEXT PRIMARY KEY,
    id_number    TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

-- migration: 5

-- Fleet identity (issue 6): each kiosk has its own Ed25519 key; no shared secret is stored.
-- The devices table is rebuilt to drop secret_sha256 and widen the status check (SQLite cannot
-- alter a CHECK). Devices registered before this migration keep their rows with no public key:
-- they must be enrolled again (`kiosk provision enrol-code`, `kiosk device enrol`).
-- public_key: raw Ed25519 public key as hex, NULL until the kiosk is enrolled.
-- key_epoch: bumped by every key change (enrolment, rotation); session tokens name the epoch
-- they were issued under, so a key change ends them.
-- change_seq: fleet-wide counter bumped by every change of status, key or placement, so each
-- server process can refresh its cached device states with one indexed query.
CREATE TABLE devices_v5 (
    device_id       TEXT PRIMARY KEY,
    serial          TEXT NOT NULL UNIQUE,
    site            TEXT NOT NULL,
    gate            TEXT NOT NULL DEFAULT '',
    location        TEXT NOT NULL DEFAULT '',
    extra           TEXT NOT NULL DEFAULT '{}',
    public_key      TEXT,
    key_epoch       BIGINT NOT NULL DEFAULT 0,
    rotate_pending  INTEGER NOT NULL DEFAULT 0 CHECK (rotate_pending IN (0, 1)),
    status          TEXT NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'quarantined', 'revoked')),
    change_seq      BIGINT NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT,
    enrolled_at     TEXT,
    last_seen_at    TEXT,
    last_heartbeat  TEXT,
    clock_skew_s    REAL
);

INSERT INTO devices_v5 (device_id, serial, site, gate, location, status, created_at,
                        last_seen_at, last_heartbeat)
    SELECT device_id, serial, site, gate, location, status, created_at, last_seen_at,
           last_heartbeat
    FROM devices;

DROP TABLE devices;

ALTER TABLE devices_v5 RENAME TO devices;

CREATE INDEX devices_change_seq ON devices (change_seq);

CREATE INDEX devices_placement ON devices (site, gate, serial);

-- Single-use enrolment codes bound to a pre-registered serial; only SHA-256 of the code.
CREATE TABLE enrol_codes (
    code_hash   TEXT PRIMARY KEY,
    serial      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);

CREATE INDEX enrol_codes_serial ON enrol_codes (serial);

-- Session challenges: single use (used_at), short-lived; shared by every server process.
CREATE TABLE session_nonces (
    nonce       TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);

CREATE INDEX session_nonces_expiry ON session_nonces (expires_at);

-- Server-side secrets (the HMAC key of session tokens), created on first use, never logged.
CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Administrators (argon2id password hashes) and their bearer tokens (SHA-256 only).
CREATE TABLE admins (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'admin' CHECK (role IN ('admin')),
    created_at    TEXT NOT NULL
);

CREATE TABLE admin_tokens (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);

-- Fleet settings from `kiosk provision init` (server_url, tls_ca, config_version).
CREATE TABLE fleet_settings (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL
);

-- Layered kiosk configuration: fleet < site < device. value is JSON.
CREATE TABLE fleet_config (
    scope       TEXT NOT NULL CHECK (scope IN ('fleet', 'site', 'device')),
    target      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (scope, target, key)
);

-- migration: 6
-- Per-site pseudonym keys (issue 6: no secret shared across the fleet). Each site's kiosks,
-- snapshots and passes pseudonymise ID numbers with that site's key (32 random bytes, hex,
-- created on first use by server.keys.site_key), so a stolen kiosk reveals only its own
-- site's pseudonyms. The fleet-wide key is dropped, not carried over: every kiosk provisioned
-- before this migration holds it and must get a new bundle (re-key or re-enrol, see
-- docs/identity.md); no site inherits it.
CREATE TABLE site_keys (
    site        TEXT PRIMARY KEY,
    key_hex     TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

DROP TABLE fleet;

-- migration: 7
-- Journal epochs (issue 10, part 3): a kiosk's audit chain is keyed by (device, epoch, seq),
-- the epoch being a random id made with its journal, so a new SD card, a wipe or a demo run
-- never collides with the kiosk's past. Events of journals made before epochs have epoch ''.
-- flagged: NULL, or the device's status ('revoked', 'quarantined') when the event arrived:
-- kept so that revoking a kiosk does not erase what it saw, never trusted for anything else.
-- SQLite cannot alter a UNIQUE constraint: the three audit tables are rebuilt.
CREATE TABLE audit_events_v7 (
    device_id     TEXT NOT NULL,
    epoch         TEXT NOT NULL DEFAULT '',
    seq           BIGINT NOT NULL,
    wall_time     TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    outcome       TEXT,
    prompt        TEXT,
    masked_id     TEXT,
    pseudonym     TEXT,
    offline       INTEGER NOT NULL,
    cache_age_s   REAL,
    latency_ms    REAL,
    boot_id       TEXT NOT NULL,
    mono_ns       BIGINT NOT NULL,
    clock_trusted INTEGER NOT NULL,
    detail        TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL,
    chain_ok      INTEGER,
    flagged       TEXT,
    UNIQUE (device_id, epoch, seq)
);

INSERT INTO audit_events_v7 (device_id, epoch, seq, wall_time, received_at, kind, outcome,
                             prompt, masked_id, pseudonym, offline, cache_age_s, latency_ms,
                             boot_id, mono_ns, clock_trusted, detail, prev_hash, hash, chain_ok)
    SELECT device_id, '', seq, wall_time, received_at, kind, outcome, prompt, masked_id,
           pseudonym, offline, cache_age_s, latency_ms, boot_id, mono_ns, clock_trusted,
           detail, prev_hash, hash, chain_ok
    FROM audit_events;

DROP TABLE audit_events;

ALTER TABLE audit_events_v7 RENAME TO audit_events;

CREATE TABLE audit_conflicts_v7 (
    device_id     TEXT NOT NULL,
    epoch         TEXT NOT NULL DEFAULT '',
    seq           BIGINT NOT NULL,
    received_at   TEXT NOT NULL,
    wall_time     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    outcome       TEXT,
    prompt        TEXT,
    masked_id     TEXT,
    pseudonym     TEXT,
    offline       INTEGER NOT NULL,
    cache_age_s   REAL,
    latency_ms    REAL,
    boot_id       TEXT NOT NULL,
    mono_ns       BIGINT NOT NULL,
    clock_trusted INTEGER NOT NULL,
    detail        TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL,
    hash_ok       INTEGER NOT NULL,
    flagged       TEXT,
    UNIQUE (device_id, epoch, seq, hash)
);

INSERT INTO audit_conflicts_v7 (device_id, epoch, seq, received_at, wall_time, kind, outcome,
                                prompt, masked_id, pseudonym, offline, cache_age_s,
                                latency_ms, boot_id, mono_ns, clock_trusted, detail,
                                prev_hash, hash, hash_ok)
    SELECT device_id, '', seq, received_at, wall_time, kind, outcome, prompt, masked_id,
           pseudonym, offline, cache_age_s, latency_ms, boot_id, mono_ns, clock_trusted,
           detail, prev_hash, hash, hash_ok
    FROM audit_conflicts;

DROP TABLE audit_conflicts;

ALTER TABLE audit_conflicts_v7 RENAME TO audit_conflicts;

-- Per (device, epoch) high-water mark: every event 1..acked_seq of the epoch is stored.
CREATE TABLE audit_progress_v7 (
    device_id   TEXT NOT NULL,
    epoch       TEXT NOT NULL DEFAULT '',
    acked_seq   BIGINT NOT NULL,
    PRIMARY KEY (device_id, epoch)
);

INSERT INTO audit_progress_v7 (device_id, epoch, acked_seq)
    SELECT device_id, '', acked_seq FROM audit_progress;

DROP TABLE audit_progress;

ALTER TABLE audit_progress_v7 RENAME TO audit_progress;

-- A kiosk's audit trouble as state alerts are raised from (issue 10, parts 2 and 3): its
-- journal as last reported by heartbeat (journal: the JSON object; journal_full 0/1), and
-- counts kept by ingestion: events kept apart as conflicts, chain breaks, events lost
-- (reported by the kiosk and missing here), events received flagged. last_problem_at: when a
-- count last grew or the journal turned full.
CREATE TABLE audit_device_state (
    device_id       TEXT PRIMARY KEY,
    journal_full    INTEGER NOT NULL DEFAULT 0,
    journal         TEXT,
    journal_seen_at TEXT,
    conflicts       BIGINT NOT NULL DEFAULT 0,
    chain_breaks    BIGINT NOT NULL DEFAULT 0,
    lost            BIGINT NOT NULL DEFAULT 0,
    flagged         BIGINT NOT NULL DEFAULT 0,
    last_problem_at TEXT
);

-- Losses a kiosk reported in its chain (a system event journal_epoch_started or
-- events_lost): which numbers of which epoch may be missing, and how many were missing here
-- when the report arrived. One row per reporting event, so a resend adds nothing.
CREATE TABLE audit_losses (
    device_id     TEXT NOT NULL,
    epoch         TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    lost_epoch    TEXT NOT NULL,
    first_seq     BIGINT,
    last_seq      BIGINT,
    missing       BIGINT NOT NULL,
    dropped       BIGINT NOT NULL,
    received_at   TEXT NOT NULL,
    PRIMARY KEY (device_id, epoch, seq)
);
