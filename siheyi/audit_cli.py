"""``kiosk audit query|export|verify-chain``: the audit trail through the server's API.

Over ``GET /v1/audit/events``, ``/v1/audit/export`` and ``/v1/audit/devices/{id}/chain``
(server/audit/read_views.py), from any machine, as any person the server knows (an admin or
an auditor; a guard sees only the assigned sites). Logging in works as for ``kiosk provision
--server-url``: ``--user USER`` once, the password from ``--password-file``,
``$SIHEYI_ADMIN_PASSWORD`` or a prompt, and the token kept per server URL, 0600, in
``$XDG_CONFIG_HOME/siheyi/user-tokens.json`` (``POST /v1/login`` tokens; the provisioning
tool's admin tokens stay in their own file) and reused until it expires or is refused.

Exit status: 0 done (``verify-chain``: the chain is whole), 1 refused (a bad filter, another
site, an unknown kiosk) or a broken chain, 2 connection, login or file problem.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeAlias, TypeVar
from urllib.parse import quote, urlencode

import msgspec

from core.wire_audit import AuditEventOut, AuditEventPage, ChainReport
from provisioning.errors import (
    DeviceNotFound,
    InvalidField,
    LoginFailed,
    ProvisioningError,
    Refused,
    StoreError,
    Unavailable,
    guarded,
)
from provisioning.remote import (
    ApiClient,
    TokenStore,
    add_connection_options,
    client_from_args,
    default_token_file,
)

T = TypeVar("T")
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: Filters: option name → query parameter.
FILTERS = ("site", "gate", "device", "since", "until", "outcome", "kind")
CHUNK = 64 * 1024


def token_file() -> Path:
    """``$XDG_CONFIG_HOME/siheyi/user-tokens.json``, beside the admin tokens."""
    return default_token_file().with_name("user-tokens.json")


class AuditApi(ApiClient):
    """The audit read API as an HTTP client (plain ``urllib``: one request per page), as any
    person the server knows; its tokens are kept apart from the admin tokens, so an auditor's
    token is never offered to the admin API."""

    def default_tokens(self) -> TokenStore:
        return TokenStore(token_file())

    @contextmanager
    def _open(self, request: urllib.request.Request) -> Iterator[Any]:
        """The response, whatever its status; a transport failure is :class:`Unavailable`."""
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s, context=self._ssl)
        except urllib.error.HTTPError as exc:
            response = exc
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable(f"{self.url}: {getattr(exc, 'reason', exc)}") from exc
        with response:
            yield response

    @contextmanager
    def _authorised(self, path: str) -> Iterator[Any]:
        """``GET path`` with a token; one new login if the kept token is refused."""
        token, fresh = self._token()
        with self._open(self._request("GET", path, None, token)) as response:
            if response.status != 401 or fresh:
                yield response
                return
        username = self._username()
        self.tokens.put(self.url, None)  # refused: never offered again
        with self._open(self._request("GET", path, None, self._login(username))) as response:
            yield response

    def get(self, path: str, answer: type[T]) -> T:
        """``GET path`` decoded as ``answer``."""
        with self._authorised(path) as response:
            return self._decode(response.status, _read(response, self.url), answer, path)

    def stream(self, path: str, sink: IO[bytes]) -> int:
        """``GET path`` copied to ``sink`` as it arrives; the number of bytes."""
        with self._authorised(path) as response:
            if response.status != 200:
                raise self._problem(response.status, _read(response, self.url), path)
            copied = 0
            while chunk := _read(response, self.url, CHUNK):
                sink.write(chunk)
                copied += len(chunk)
            return copied

    def _decode(self, status: int, raw: bytes, answer: type[T], path: str) -> T:
        if status != 200:
            raise self._problem(status, raw, path)
        try:
            return msgspec.json.decode(raw, type=answer)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Unavailable(f"{self.url}{path}: unexpected answer: {exc}") from exc

    def _problem(self, status: int, raw: bytes, path: str) -> ProvisioningError:
        """The documented ``{"error", "detail"}`` answer as an error with an exit status."""
        try:
            detail = str(json.loads(raw)["detail"])
        except (ValueError, TypeError, KeyError):
            detail = raw[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
        if status == 400:
            return InvalidField(detail)
        if status == 401:
            return LoginFailed(f"{self.url}: the login was refused again: {detail}")
        if status == 403:
            return Refused(detail)
        if status == 404:
            return DeviceNotFound(detail)
        return Unavailable(f"{self.url}{path}: HTTP {status}: {detail}")


def _read(response: Any, url: str, size: int = -1) -> bytes:
    """Bytes of the body; a connection lost mid-answer is :class:`Unavailable`."""
    try:
        data: bytes = response.read(size)
    except (OSError, http.client.HTTPException) as exc:  # IncompleteRead: cut off mid-chunk
        raise Unavailable(f"{url}: the answer broke off: {exc}") from exc
    return data


# -- verbs --------------------------------------------------------------------------------


def _api(args: argparse.Namespace) -> AuditApi:
    return client_from_args(AuditApi, args)


def filter_query(args: argparse.Namespace, **more: str | None) -> dict[str, str]:
    """The query parameters of the filter options given (and ``more``)."""
    params = {name: getattr(args, name) for name in FILTERS}
    if args.offline is not None:
        params["offline"] = "true" if args.offline else "false"
    params.update(more)
    return {k: v for k, v in params.items() if v is not None}


def _path(base: str, params: dict[str, str]) -> str:
    return base + (f"?{urlencode(params)}" if params else "")


def cmd_query(args: argparse.Namespace) -> int:
    """Events newest first: one page (``--limit``), or every page with ``--all``."""
    api = _api(args)
    cursor: str | None = args.cursor
    shown = 0
    if not args.json:
        print(_row(HEADER))
    while True:
        params = filter_query(args, limit=str(args.limit), cursor=cursor)
        page = api.get(_path("/v1/audit/events", params), AuditEventPage)
        for event in page.events:
            print(
                json.dumps(msgspec.to_builtins(event), ensure_ascii=False)
                if args.json
                else _row(_cells(event))
            )
        shown += len(page.events)
        cursor = page.next
        if cursor is None or not args.all:
            break
    if cursor is not None:
        print(f"more: --cursor {cursor}", file=sys.stderr)
    elif not args.json:
        print(f"{shown} event(s)", file=sys.stderr)
    return 0


HEADER = ("RECEIVED_AT", "SITE", "GATE", "DEVICE", "SEQ", "KIND", "OUTCOME", "OFFLINE", "MASKED_ID")
_WIDTHS = (25, 14, 8, 14, 6, 8, 18, 7, 18)


def _cells(e: AuditEventOut) -> tuple[str, ...]:
    return (
        e.received_at, e.site or "-", e.gate or "-", e.device_id, str(e.seq), e.kind,
        e.outcome or "-", "yes" if e.offline else "no", e.masked_id or "-",
    )  # fmt: skip


def _row(cells: tuple[str, ...]) -> str:
    return " ".join(f"{c:<{w}}" for c, w in zip(cells, _WIDTHS, strict=True)).rstrip()


def cmd_export(args: argparse.Namespace) -> int:
    """Every matching event as CSV or JSON, to ``--output`` (written whole or not at all) or
    standard output."""
    api = _api(args)
    path = _path("/v1/audit/export", filter_query(args, format=args.format))
    if args.output in (None, "-"):
        api.stream(path, sys.stdout.buffer)
        sys.stdout.flush()
        return 0
    target = Path(args.output)
    with _replacing(target) as sink:
        size = api.stream(path, sink)
    print(f"{size} byte(s) of {args.format.upper()} written to {target}", file=sys.stderr)
    return 0


@contextmanager
def _replacing(target: Path) -> Iterator[IO[bytes]]:
    """A file beside ``target`` that replaces it once complete; removed on failure."""
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with partial.open("xb") as sink:
            yield sink
        os.replace(partial, target)
    except ProvisioningError:  # the server's refusal (some are OSErrors): as it is
        raise
    except OSError as exc:
        raise StoreError(f"{target}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def cmd_verify_chain(args: argparse.Namespace) -> int:
    """One kiosk's chain recomputed by the server; exit 1 unless it is whole."""
    api = _api(args)
    report = api.get(f"/v1/audit/devices/{quote(args.device_id, safe='')}/chain", ChainReport)
    if args.json:
        print(json.dumps(msgspec.to_builtins(report), ensure_ascii=False, indent=2))
    else:
        verdict = "ok" if report.ok else "BROKEN"
        print(
            f"{report.device_id}: {verdict}: {report.events} event(s) in"
            f" {len(report.epochs)} epoch(s), {len(report.breaks)} break(s),"
            f" {report.conflicts} conflict(s), {report.missing} missing"
        )
        for epoch in report.epochs:
            if epoch.breaks or epoch.missing or epoch.conflicts:
                ranges = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in epoch.missing)
                print(
                    f"  epoch {epoch.epoch or '(legacy)'}: breaks at seq"
                    f" {', '.join(map(str, epoch.breaks)) or '-'}; missing {ranges or '-'};"
                    f" conflicts {epoch.conflicts}"
                )
    return 0 if report.ok else 1


# -- the parser ---------------------------------------------------------------------------


def register(subparsers: Subparsers) -> None:
    """Add ``audit`` and its verbs to the top-level ``kiosk`` parser."""
    audit = subparsers.add_parser("audit", help="read the audit trail through the server's API")
    verbs = audit.add_subparsers(dest="audit_verb", metavar="VERB", required=True)
    query = verbs.add_parser("query", help="events newest first, as a table or JSON lines")
    _filters(query)
    query.add_argument(
        "--limit", type=int, default=100, metavar="N", help="events per page, 1-1000 (100)"
    )
    query.add_argument("--cursor", help="start after this page (printed as 'more: …')")
    query.add_argument("--all", action="store_true", help="every page, not only the first")
    query.add_argument("--json", action="store_true", help="one JSON object per line")
    query.set_defaults(func=guarded(cmd_query))
    export = verbs.add_parser("export", help="every matching event as CSV or JSON")
    _filters(export)
    export.add_argument(
        "--format", choices=("csv", "json"), default="csv", help="csv (default) or json"
    )
    export.add_argument("--output", "-o", metavar="FILE", help="file to write (default stdout)")
    export.set_defaults(func=guarded(cmd_export))
    chain = verbs.add_parser("verify-chain", help="a kiosk's chain checked by the server")
    chain.add_argument("device_id", metavar="DEVICE_ID", help="the kiosk's device id")
    chain.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    chain.set_defaults(func=guarded(cmd_verify_chain))
    for parser in (query, export, chain):
        _connection(parser)


def _connection(parser: argparse.ArgumentParser) -> None:
    add_connection_options(parser, AuditApi, "log in as this person (admin, auditor, guard)")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", metavar="SITE", help="only events of kiosks at this site")
    parser.add_argument("--gate", metavar="GATE", help="only events of kiosks at this gate")
    parser.add_argument("--device", metavar="DEVICE_ID", help="only events of this kiosk")
    parser.add_argument(
        "--since", metavar="TIME", help="received at or after (ISO 8601, Z or +08:00)"
    )
    parser.add_argument("--until", metavar="TIME", help="received before (ISO 8601)")
    parser.add_argument(
        "--outcome",
        choices=("pass", "check", "nat_expired", "invalid_credential", "fault"),
        help="only decisions with this outcome",
    )
    parser.add_argument(
        "--kind",
        choices=("decision", "fault", "guard", "system"),
        help="only events of this kind",
    )
    offline = parser.add_mutually_exclusive_group()
    offline.add_argument(
        "--offline", dest="offline", action="store_true", default=None, help="decided offline only"
    )
    offline.add_argument(
        "--online", dest="offline", action="store_false", help="decided online only"
    )
