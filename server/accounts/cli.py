"""``kiosk server user add|list|remove``: accounts managed on the server host, straight in
the database (the admin API's ``/v1/admin/users`` does the same from anywhere)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path

from server.accounts import users
from server.accounts.passwords import hash_password
from server.accounts.principal import ROLES
from server.fleet.sessions import now_iso, utc_now
from server.storage.db import connect, transaction

Resolve = Callable[[argparse.Namespace], str | Path | None]


#: The account refusals (worded for the API too) in this command line's words.
CLI_WORDS = (
    (users.GUARD_NEEDS_SITE, "a guard needs at least one --site"),
    (users.SITES_ARE_FOR_GUARDS, "--site is for guards only"),
)


def cli_words(text: str) -> str:
    """``text`` with the neutral words of :mod:`server.accounts.users` naming ``--site``."""
    for neutral, ours in CLI_WORDS:
        text = text.replace(neutral, ours)
    return text


def read_password(path: str | None) -> str:
    """The password from ``--password-file`` (first line), else asked twice on a terminal,
    else the first line of standard input (scripts)."""
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ValueError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_add(args: argparse.Namespace, database: str | Path) -> int:
    users.check_account(args.username, args.role, args.site or [])
    hashed = hash_password(read_password(args.password_file))
    with connect(database) as conn, transaction(conn):
        users.save_user(conn, args.username, args.role, args.site or [], hashed, now_iso(utc_now()))
    where = f" for {', '.join(sorted(set(args.site)))}" if args.site else ""
    print(f"{args.role} {args.username} saved{where}")
    return 0


def cmd_list(args: argparse.Namespace, database: str | Path) -> int:
    with connect(database) as conn:
        accounts = users.list_users(conn)
    if args.json:
        rows = [{"username": a.username, "role": a.role, "sites": list(a.sites)} for a in accounts]
        print(json.dumps({"users": rows}, ensure_ascii=False, indent=2))
        return 0
    print(f"{'USER':<24} {'ROLE':<8} SITES")
    for a in accounts:
        print(f"{a.username:<24} {a.role:<8} {', '.join(a.sites) or '(all)'}")
    return 0


def cmd_remove(args: argparse.Namespace, database: str | Path) -> int:
    with connect(database) as conn, transaction(conn):
        users.remove_user(conn, args.username)
    print(f"{args.username} removed; its sessions ended")
    return 0


def run(
    verb: Callable[[argparse.Namespace, str | Path], int], resolve: Resolve
) -> Callable[[argparse.Namespace], int]:
    """A verb with the database resolved and account errors printed, exit status 1."""

    def main(args: argparse.Namespace) -> int:
        database = resolve(args)
        if database is None:
            return 2
        try:
            return verb(args, database)
        except BrokenPipeError:  # `| head`: the command line ends quietly (siheyi.cli)
            raise
        except (users.AccountError, ValueError, OSError) as exc:
            print(f"error: {cli_words(str(exc))}", file=sys.stderr)
            return 1

    return main


def register(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser],
    add_database_options: Callable[[argparse.ArgumentParser], None],
    resolve: Resolve,
) -> None:
    """Add ``user add|list|remove`` under ``kiosk server``."""
    user = verbs.add_parser("user", help="accounts: admins, site guards, auditors")
    user_verbs = user.add_subparsers(dest="user_verb", metavar="VERB", required=True)
    add = user_verbs.add_parser("add", help="create an account, or replace its role and sites")
    add.add_argument("username", metavar="USER", help="the account's login name")
    add.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="admin: everything; guard: the board and audit of its --site sites;"
        " auditor: reads every site's audit trail",
    )
    add.add_argument(
        "--site", action="append", metavar="S", help="a site a guard watches (repeat for more)"
    )
    add.add_argument(
        "--password-file", metavar="F", help="read the password from F (else asked, or stdin)"
    )
    listing = user_verbs.add_parser("list", help="every account with its role and sites")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = user_verbs.add_parser("remove", help="delete an account and end its sessions")
    remove.add_argument("username", metavar="USER", help="the account to delete")
    for parser, verb in ((add, cmd_add), (listing, cmd_list), (remove, cmd_remove)):
        add_database_options(parser)
        parser.set_defaults(func=run(verb, resolve))
