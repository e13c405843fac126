-- migration: 8
-- Tap-id replay memory shared by every server process (issue 11): a kiosk's tap id is
-- decided once. The handler inserts (device_id, tap_id) once the tap is decided; the insert
-- that finds a live row is the replay (409), whichever process decided the first copy.
-- A row past expires_at ([identity] replay_ttl_s later; unix seconds, server clock) no longer
-- counts and is purged in bounded batches off the request path (server/verify/replay.py).
CREATE TABLE tap_replay (
    device_id   TEXT NOT NULL,
    tap_id      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (device_id, tap_id)
);

CREATE INDEX tap_replay_expiry ON tap_replay (expires_at);
