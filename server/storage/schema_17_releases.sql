-- migration: 17
-- Software releases for the fleet and their rollouts (issue 13, part 5; server/releases,
-- docs/releases.md).
--
-- releases: one signed wheel per version. The signature is the release key's (kept offline
-- by the admin); the server stores it to hand on, it holds no key that could make one.
-- The wheel's bytes live apart in release_wheels, so listing releases never reads them.
CREATE TABLE releases (
    version       TEXT PRIMARY KEY,
    filename      TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    signature     TEXT NOT NULL,
    size          BIGINT NOT NULL,
    published_at  TEXT NOT NULL,
    published_by  TEXT NOT NULL
);

-- only: sqlite
CREATE TABLE release_wheels (
    version  TEXT PRIMARY KEY,
    wheel    BLOB NOT NULL
);

-- only: postgresql
CREATE TABLE release_wheels (
    version  TEXT PRIMARY KEY,
    wheel    BYTEA NOT NULL
);

-- rollouts: one version to one scope (fleet, a site, a device) in waves of percent
-- (JSON text, e.g. [1,10,100]); wave is the index of the wave open now (kiosks in waves
-- 0..wave are offered the version). state: running | halted | done | cancelled.
-- wave_started_at is when the current wave opened (the soak time counts from it).
CREATE TABLE rollouts (
    id                 INTEGER PRIMARY KEY,
    version            TEXT NOT NULL,
    scope              TEXT NOT NULL,
    target             TEXT NOT NULL,
    waves              TEXT NOT NULL,
    wave               INTEGER NOT NULL DEFAULT 0,
    failure_threshold  DOUBLE PRECISION NOT NULL,
    soak_s             DOUBLE PRECISION NOT NULL DEFAULT 0,
    state              TEXT NOT NULL,
    started_at         TEXT NOT NULL,
    started_by         TEXT NOT NULL,
    wave_started_at    TEXT NOT NULL,
    ended_at           TEXT,
    halted_reason      TEXT
);

-- release_layers: the rollout that sets the desired version of each layer (fleet '' /
-- a site / a device id). A kiosk follows the most specific layer that covers it; a newer
-- rollout of the same layer replaces the row.
CREATE TABLE release_layers (
    scope       TEXT NOT NULL,
    target      TEXT NOT NULL,
    rollout_id  INTEGER NOT NULL,
    PRIMARY KEY (scope, target)
);

-- kiosk_updates: each kiosk's last update report (Heartbeat.update) and the version it
-- last said it runs; written only when either changes. retry (0/1): the report is a
-- 'failed' the kiosk will try again (interrupted download, full disk): no verdict on the
-- release, so it neither counts toward halting a rollout nor stops the offer.
CREATE TABLE kiosk_updates (
    device_id  TEXT PRIMARY KEY,
    running    TEXT,
    version    TEXT,
    state      TEXT,
    detail     TEXT,
    retry      INTEGER NOT NULL DEFAULT 0,
    at         TEXT NOT NULL
);

CREATE INDEX kiosk_updates_version ON kiosk_updates (version, state);
