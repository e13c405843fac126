"""A generic HTTP upstream adapter: one of the four checks answered by a remote JSON service.

Configured per check kind under ``[sources.<name>]`` (docs/server.md "HTTP upstreams"): a URL
template with ``{id_number}`` (URL-quoted), GET or POST with a JSON body template, headers
(``${ENV}`` expanded at start-up), dotted paths from the upstream JSON to our fields and an
optional value translation. ``404`` means the person has no record (``missing``); any other
non-2xx status, a redirect, a body that is not JSON, a mapped field that is absent or of the
wrong kind, and a connection failure raise :class:`~server.errors.UpstreamError`; slowness
raises ``TimeoutError``. :class:`~server.verify.resilience.ResilientSource` turns both into a
stale or error answer.

Error messages name the upstream's host and the field, never the URL (which holds the ID
number) nor a header (which holds a token).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from core.checks import HealthCode, NatResult, SourceResult, Travel, Vaccination
from server.config import (
    ID_PLACEHOLDER,
    RESOLVED_ID_FIELD,
    TOKEN_PLACEHOLDER,
    HttpUpstream,
    ServerConfig,
)
from server.errors import UpstreamError
from server.storage.db import Database
from server.verify.qr import (
    ChainResolver,
    LocalTokenResolver,
    Resolution,
    TokenResolver,
    valid_number,
)
from server.verify.sources import (
    HealthCodeSource,
    NatSource,
    SourceAdapter,
    TravelSource,
    VaccinationSource,
)

MAX_BODY_BYTES = 256 * 1024
_ABSENT = object()

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def dig(document: Any, path: str) -> Any:
    """Follow a dotted path (``data.items.0.color``) into parsed JSON; ``_ABSENT`` if absent."""
    node = document
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, _ABSENT)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _ABSENT
        if node is _ABSENT:
            return _ABSENT
    return node


def fill(template: Any, id_number: str) -> Any:
    """A copy of a JSON body template with ``{id_number}`` replaced in every string."""
    if isinstance(template, str):
        return template.replace(ID_PLACEHOLDER, id_number)
    if isinstance(template, dict):
        return {k: fill(v, id_number) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, id_number) for v in template]
    return template


def _translation_key(value: Any) -> str:
    """How an upstream value is looked up in ``[sources.<name>.values]`` (JSON spelling)."""
    return value if isinstance(value, str) else json.dumps(value)


class _Answer:
    """The mapped fields of one upstream answer, converted with errors naming the field.

    ``fields`` limits which mapped fields are read (a lookup answer does not carry the
    ``id_number`` of a token-resolve answer, and the other way round).
    """

    def __init__(
        self,
        spec: HttpUpstream,
        document: Any,
        host: str,
        fetched_at: datetime,
        fields: Callable[[str], bool] = lambda name: name != RESOLVED_ID_FIELD,
    ) -> None:
        self.host = host
        self.fetched_at = fetched_at
        self.values: dict[str, Any] = {}
        for name, path in spec.mapping.items():
            if not fields(name):
                continue
            value = dig(document, path)
            if value is _ABSENT:
                raise UpstreamError(f"{host}: answer has no {path!r} (mapped to {name})")
            table = spec.values.get(name)
            if table is not None:
                value = table.get(_translation_key(value), value)
            self.values[name] = value

    def fail(self, name: str, message: str) -> UpstreamError:
        return UpstreamError(f"{self.host}: field {name}: {message}")

    def raw(self, name: str, *, required: bool) -> Any:
        value = self.values.get(name)
        if value is None and required:
            raise self.fail(name, "missing or null")
        return value

    def choice(self, name: str, allowed: Sequence[str]) -> str:
        value = self.raw(name, required=True)
        text = value.strip().lower() if isinstance(value, str) else ""
        if text not in allowed:
            raise self.fail(name, f"must be one of {', '.join(allowed)}, got {value!r}")
        return text

    def text(self, name: str) -> str:
        value = self.raw(name, required=False)
        if value is None:
            return ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.fail(name, "must be a string")
        return str(value)[:200]

    def time(self, name: str, *, required: bool) -> datetime:
        value = self.raw(name, required=required)
        if value is None:
            return self.fetched_at
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:  # seconds since the epoch
                return datetime.fromtimestamp(value, UTC)
            except (OverflowError, OSError, ValueError):
                raise self.fail(name, "epoch seconds out of range") from None
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.strip())
            except ValueError:
                raise self.fail(name, "not an ISO 8601 timestamp") from None
            if parsed.tzinfo is None:
                raise self.fail(name, "timestamp needs a UTC offset")
            return parsed
        raise self.fail(name, "must be an ISO 8601 timestamp or epoch seconds")

    def day(self, name: str) -> date | None:
        value = self.raw(name, required=False)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
            try:
                return datetime.fromisoformat(value.strip()).date()
            except ValueError:
                pass
        raise self.fail(name, "not an ISO 8601 date")

    def count(self, name: str) -> int:
        value = self.raw(name, required=True)
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 99:
            raise self.fail(name, f"must be an integer from 0 to 99, got {value!r}")
        return value

    def flag(self, name: str) -> bool:
        value = self.raw(name, required=True)
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("1", "true", "yes"):
                return True
            if text in ("0", "false", "no"):
                return False
        raise self.fail(name, f"must be a boolean, 0/1 or yes/no, got {value!r}")


def _health_code(a: _Answer) -> HealthCode:
    colour = a.choice("colour", ("green", "yellow", "red"))
    return HealthCode(colour, a.text("reason"), a.time("updated_at", required=False))


def _nat(a: _Answer) -> NatResult:
    result = a.choice("result", ("negative", "positive"))
    return NatResult(result, a.time("sampled_at", required=True), a.text("lab"))


def _vaccination(a: _Answer) -> Vaccination:
    return Vaccination(a.count("doses"), a.day("last_dose_at"))


def _travel(a: _Answer) -> Travel:
    return Travel(a.flag("flagged"), a.text("area"), a.time("updated_at", required=False))


RECORDS: Mapping[str, Callable[[_Answer], Any]] = {
    "health_code": _health_code,
    "nat": _nat,
    "vaccination": _vaccination,
    "travel": _travel,
}


class HttpSource:
    """Answers one check kind from a remote JSON service over a shared ``ClientSession``."""

    def __init__(
        self,
        name: str,
        spec: HttpUpstream,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if name not in RECORDS:
            raise ValueError(f"unknown source {name!r}")
        self.name = name
        self._spec = spec
        self._session = session
        self._record = RECORDS[name]
        self._clock = clock or _utc_now
        self._timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        self.host = urlsplit(spec.url.replace(ID_PLACEHOLDER, "x")).netloc.rpartition("@")[2]

    def __repr__(self) -> str:
        return f"HttpSource({self.name!r}, host={self.host!r})"

    async def lookup(self, id_number: str) -> SourceResult[Any]:
        """Ask the upstream; ``404`` → missing; raises on anything else but a usable 2xx."""
        url = self._spec.url.replace(ID_PLACEHOLDER, quote(id_number, safe=""))
        body = None if self._spec.body is None else fill(self._spec.body, id_number)
        found, document = await _fetch_json(
            self._session, self._spec, self._spec.method, url, body, self._timeout, self.host
        )
        if not found:
            return SourceResult.missing()
        answer = _Answer(self._spec, document, self.host, self._clock())
        return SourceResult.ok(self._record(answer))


async def _fetch_json(
    session: aiohttp.ClientSession,
    spec: HttpUpstream,
    method: str,
    url: str,
    body: Any,
    timeout: aiohttp.ClientTimeout | None,
    host: str,
    what: str = "",
) -> tuple[bool, Any]:
    """(False, None) on 404, else (True, the decoded JSON); every failure is UpstreamError or
    TimeoutError naming the host only (the URL may hold an ID number or a token)."""
    suffix = f" ({what})" if what else ""
    try:
        async with session.request(
            method,
            url,
            json=body,
            headers=dict(spec.headers),
            allow_redirects=False,
            timeout=timeout,
        ) as resp:
            if resp.status == 404:
                return False, None
            if not 200 <= resp.status < 300:
                raise UpstreamError(f"{host} answered HTTP {resp.status}{suffix}")
            raw = await _read_bounded(resp, host)
    except TimeoutError:
        raise TimeoutError(f"{host} did not answer in time{suffix}") from None
    except aiohttp.ClientError as exc:  # the message may hold the URL: keep the type only
        raise UpstreamError(f"{host}: {type(exc).__name__}{suffix}") from None
    try:
        return True, json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        what_answer = f"{what} answer" if what else "answer"
        raise UpstreamError(f"{host}: {what_answer} is not JSON") from None


async def _read_bounded(resp: aiohttp.ClientResponse, host: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise UpstreamError(f"{host}: answer larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class HttpTokenResolver:
    """Resolves QR tokens through the health-code upstream's ``resolve_url`` (GET).

    ``{token}`` is replaced by the URL-quoted token. ``404`` → unknown; a ``2xx`` whose mapped
    ``id_number`` is ``null`` or ``""`` → unknown; any other status, a body that is not JSON,
    an absent path or a value that is not a valid ID number → :class:`UpstreamError`
    (the verify answer is then ``check``, not ``invalid_credential``). Errors name the host
    only: the URL holds the token.
    """

    def __init__(
        self,
        spec: HttpUpstream,
        session: aiohttp.ClientSession,
        *,
        timeout_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        if spec.resolve_url is None or RESOLVED_ID_FIELD not in spec.mapping:
            raise ValueError("HttpTokenResolver needs resolve_url and mapping.id_number")
        self._spec = spec
        self._url = spec.resolve_url
        self._session = session
        self._clock = clock or _utc_now
        self._timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        self.host = urlsplit(self._url.replace(TOKEN_PLACEHOLDER, "x")).netloc.rpartition("@")[2]

    def __repr__(self) -> str:
        return f"HttpTokenResolver(host={self.host!r})"

    async def resolve(self, token: str, now: datetime) -> Resolution:
        """Ask the upstream who ``token`` belongs to."""
        url = self._url.replace(TOKEN_PLACEHOLDER, quote(token, safe=""))
        found, document = await _fetch_json(
            self._session, self._spec, "GET", url, None, self._timeout, self.host, "resolve"
        )
        if not found:
            return Resolution.unknown()
        answer = _Answer(
            self._spec, document, self.host, self._clock(), lambda n: n == RESOLVED_ID_FIELD
        )
        value = answer.raw(RESOLVED_ID_FIELD, required=False)
        if value is None or value == "":
            return Resolution.unknown()
        number = valid_number(value) if isinstance(value, str) else None
        if number is None:
            raise answer.fail(RESOLVED_ID_FIELD, "not a valid ID number")
        return Resolution.found(number)


_LOCAL: Mapping[str, Callable[[Database], SourceAdapter]] = {
    "health_code": HealthCodeSource,
    "nat": NatSource,
    "vaccination": VaccinationSource,
    "travel": TravelSource,
}


def configured_sources(
    config: ServerConfig,
    db: Database,
    session: aiohttp.ClientSession,
    *,
    clock: Clock | None = None,
) -> list[SourceAdapter]:
    """The four adapters the configuration asks for: local tables or HTTP upstreams."""
    adapters: list[SourceAdapter] = []
    for name, local in _LOCAL.items():
        settings = config.source(name)
        if settings.type == "http" and settings.http is not None:
            timeout = config.timeout_for(name)
            adapters.append(
                HttpSource(name, settings.http, session, timeout_s=timeout, clock=clock)
            )
        else:
            adapters.append(local(db))
    return adapters


def configured_resolver(
    config: ServerConfig,
    db: Database,
    session: aiohttp.ClientSession,
    *,
    clock: Clock | None = None,
) -> ChainResolver:
    """QR token resolution: the ``qr_tokens`` table, then the health-code upstream's
    ``resolve_url`` when configured; bounded by the health-code source's timeout."""
    resolvers: list[TokenResolver] = [LocalTokenResolver(db)]
    settings = config.source("health_code")
    timeout = config.timeout_for("health_code")
    if settings.http is not None and settings.http.resolve_url is not None:
        resolvers.append(HttpTokenResolver(settings.http, session, timeout_s=timeout, clock=clock))
    return ChainResolver(resolvers, timeout_s=timeout)
