-- migration: 9
-- State that must hold across server processes (kiosk server run --workers N, or several
-- hosts on one PostgreSQL): pass nonces claimed by kiosks, and admin login failures.

-- A signed pass's nonce, claimed by the kiosk that accepted it (POST /v1/passes/claim):
-- a second claim, at any kiosk through any process, is refused until the pass expires.
-- Times are unix seconds (server clock); rows past expires_at are purged.
CREATE TABLE pass_claims (
    nonce       TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    claimed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX pass_claims_expiry ON pass_claims (expires_at);

-- Admin login failures per key (kind "pair": account + source, "account", "source"), shared
-- by every process so N workers do not give a guesser N times the guesses
-- (server/http/loginguard.py). Times are unix seconds; a key quiet for a day is forgotten.
CREATE TABLE login_strikes (
    kind           TEXT NOT NULL,
    key            TEXT NOT NULL,
    failures       INTEGER NOT NULL,
    blocked_until  DOUBLE PRECISION NOT NULL,
    last_at        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (kind, key)
);

CREATE INDEX login_strikes_last ON login_strikes (last_at);

-- Sources that logged in to an account: the account-wide count never holds them back.
CREATE TABLE login_trusted (
    account  TEXT NOT NULL,
    source   TEXT NOT NULL,
    at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account, source)
);

-- Kiosks announced down on the event stream (no heartbeat for a while): one row per kiosk
-- while it is down, so that of several processes watching, one announces it, once.
CREATE TABLE kiosk_down (
    device_id  TEXT PRIMARY KEY,
    since      TEXT NOT NULL
);
