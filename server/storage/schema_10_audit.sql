-- migration: 10
-- Audit at scale (issue 11, part 4): monthly partitions on PostgreSQL, retention on both.
--
-- wall_month: YYYYMM of the event's own wall_time as the kiosk wrote it, 0 for the events
-- stored before this migration. On PostgreSQL audit_events becomes a table partitioned by
-- RANGE (wall_month): the existing table is attached, rows in place, as the partition
-- audit_events_legacy (wall_month < 1); audit_events_default takes any month without a
-- partition of its own; monthly partitions audit_events_pYYYYMM are made by the server
-- (server/audit/partitions.py). A unique constraint of a partitioned table must include the
-- partition key, hence UNIQUE (device_id, epoch, seq, wall_month): a resent event has the same
-- wall_time, so the same month. On SQLite the column is added and nothing else changes.
-- received_at is indexed on the three audit tables for `kiosk server prune`.
-- audit_progress.acked_hash: the hash of the event at acked_seq, so the chain can still be
-- verified across events removed by retention.

ALTER TABLE audit_events ADD COLUMN wall_month INTEGER NOT NULL DEFAULT 0;

-- only: postgresql
ALTER TABLE audit_events RENAME TO audit_events_legacy;

-- only: postgresql
CREATE TABLE audit_events (
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
    wall_month    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, epoch, seq, wall_month)
) PARTITION BY RANGE (wall_month);

-- only: postgresql
ALTER TABLE audit_events ATTACH PARTITION audit_events_legacy FOR VALUES FROM (MINVALUE) TO (1);

-- only: postgresql
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

CREATE INDEX audit_events_received ON audit_events (received_at);

CREATE INDEX audit_conflicts_received ON audit_conflicts (received_at);

CREATE INDEX audit_losses_received ON audit_losses (received_at);

ALTER TABLE audit_progress ADD COLUMN acked_hash TEXT;

UPDATE audit_progress SET acked_hash = (
    SELECT e.hash FROM audit_events AS e
    WHERE e.device_id = audit_progress.device_id AND e.epoch = audit_progress.epoch
      AND e.seq = audit_progress.acked_seq
    LIMIT 1
);
