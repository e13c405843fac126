-- migration: 12
-- The kiosk command channel (issue 12, part 3; server/commands, docs/commands.md).
--
-- kiosk_links: one row per kiosk holding its WebSocket (GET /v1/device/ws) to some server
-- process. `process` names that process, `link` that one connection (a reconnect replaces the
-- row, so the close of an older connection cannot delete the newer one's); the process
-- refreshes `refreshed_at` of its rows every few seconds, so the rows of a process that died
-- without closing its sockets go stale and are swept.
CREATE TABLE kiosk_links (
    device_id     TEXT PRIMARY KEY,
    process       TEXT NOT NULL,
    link          TEXT NOT NULL,
    connected_at  TEXT NOT NULL,
    refreshed_at  TEXT NOT NULL
);

CREATE INDEX kiosk_links_process ON kiosk_links (process);

-- kiosk_commands: every command the server signed for a kiosk, who asked and why, and the
-- kiosk's acknowledgement; the not yet acknowledged, unexpired ones also ride on the
-- heartbeat answer (the fallback when the socket cannot be held).
CREATE TABLE kiosk_commands (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    command     TEXT NOT NULL,
    by_user     TEXT NOT NULL,
    reason      TEXT,
    signed      TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    acked_at    TEXT,
    ok          INTEGER,
    error       TEXT
);

CREATE INDEX kiosk_commands_device ON kiosk_commands (device_id, expires_at);
