"""A real PostgreSQL server for the tests, started and stopped by the tests themselves.

``initdb`` and ``pg_ctl`` run as the ``postgres`` user through ``runuser`` when the tests run
as root (PostgreSQL refuses to run as root), as the current user otherwise. The cluster lives
in a fresh directory, listens on loopback on a free port and is thrown away at the end.
Durability is switched off: these databases are scratch.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

from server.storage.connection import Connection, dialect_of
from server.storage.db import connect


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program (Debian keeps them out of PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install postgresql (make test does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def table_columns(conn: Connection, table: str) -> set[str]:
    """Column names of ``table`` on either backend."""
    if dialect_of(conn) == "sqlite":
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,)
    )
    return {row[0] for row in rows}


def dump_text(conn: Connection) -> str:
    """Every row of every table as text, on either backend (to search for secrets)."""
    if dialect_of(conn) == "sqlite":
        return "\n".join(conn.iterdump())  # type: ignore[attr-defined]
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    lines = []
    for (table,) in tables:
        lines += [repr(row) for row in conn.execute(f'SELECT * FROM "{table}"')]
    return "\n".join(lines)


class PgCluster:
    """One throw-away cluster; :meth:`new_database` gives each test an empty migrated one."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="siheyi-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        self._names = itertools.count(1)
        self._template: str | None = None

    def _run(self, *argv: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self._as_root else list(argv)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120, cwd="/")

    def start(self) -> PgCluster:
        if self._as_root:
            shutil.chown(self.root, "postgres")
        self._run(
            pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        )
        self.start_again()
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, *, migrated: bool = True) -> str:
        """URL of a new database, migrated from a template (fast) unless asked empty."""
        name = f"t{os.getpid()}_{next(self._names)}"
        if not migrated:
            self._admin(f"CREATE DATABASE {name}")
            return self.url(name)
        if self._template is None:
            self._template = f"template_{os.getpid()}"
            self._admin(f"CREATE DATABASE {self._template}")
            with connect(self.url(self._template)):
                pass
        self._admin(f"CREATE DATABASE {name} TEMPLATE {self._template}")
        return self.url(name)

    def restart(self) -> None:
        """Stop (fast: connections cut) and start again on the same port."""
        self.stop()
        self.start_again()

    def stop(self) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start_again(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
