-- migration: 11
-- People (issue 12): the admins table becomes every person's account, with the roles admin
-- (everything), guard (the assigned sites only) and auditor (read-only audit). SQLite cannot
-- alter a CHECK, so the table is rebuilt on both backends the same way.
CREATE TABLE admins_v11 (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'admin' CHECK (role IN ('admin', 'guard', 'auditor')),
    created_at    TEXT NOT NULL
);

INSERT INTO admins_v11 (username, password_hash, role, created_at)
    SELECT username, password_hash, role, created_at FROM admins;

DROP TABLE admins;

ALTER TABLE admins_v11 RENAME TO admins;

-- The sites a guard watches (admins and auditors see every site and have no rows here).
CREATE TABLE user_sites (
    username  TEXT NOT NULL,
    site      TEXT NOT NULL,
    PRIMARY KEY (username, site)
);

-- A token is a bearer token (scripts, the CLI) or a board session (the HttpOnly cookie).
ALTER TABLE admin_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'bearer';

CREATE INDEX admin_tokens_user ON admin_tokens (username);
