"""``kiosk provision --server-url URL``: the fleet through the admin API, from a laptop.

The administrator logs in once (``--admin USER``; the password from ``--password-file``,
``$SIHEYI_ADMIN_PASSWORD`` or a prompt); the token is kept per server URL in
``$XDG_CONFIG_HOME/siheyi/admin-tokens.json`` (mode 0600, directory 0700) and reused until it
expires. A token the server no longer accepts (expired early, the admin's tokens purged, a
restored database) costs one new login, never a loop. Plain ``urllib``: the verbs are one
request each, and the tool keeps no event loop.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode, urlsplit

import msgspec

from core.wire_admin import (
    BulkAnswer,
    BulkRequest,
    ConfigLayers,
    ConfigSetRequest,
    ConfigVersion,
    DeviceAction,
    DeviceInfo,
    DeviceList,
    EnrolCode,
    EnrolCodeRequest,
    LoginAnswer,
    LoginRequest,
    Registered,
    RegisterRequest,
    SiteList,
    SitesAdded,
    SitesRequest,
)
from provisioning.errors import (
    DeviceNotFound,
    InvalidField,
    LoginFailed,
    NoPassword,
    ProvisioningError,
    Refused,
    SerialExists,
    StoreError,
    Unavailable,
    UnknownSite,
)

T = TypeVar("T")
#: A cached token this close to its expiry is not used: a new login is cheaper than a 401.
EXPIRY_MARGIN = timedelta(seconds=30)
PASSWORD_VARIABLE = "SIHEYI_ADMIN_PASSWORD"
Password = Callable[[str], str]


def password_source(password_file: str | None, *, confirm: bool = False) -> Password:
    """Where an admin's password comes from: the file, else the variable, else a prompt.

    Without a terminal the prompt is refused: getpass would read stdin with a warning or die
    at EOF, and a scripted set-up must say where the password comes from.
    """

    def read(username: str) -> str:
        if password_file:
            try:
                return Path(password_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise NoPassword(f"--password-file {password_file}: {exc}") from exc
        if os.environ.get(PASSWORD_VARIABLE):
            return os.environ[PASSWORD_VARIABLE]
        if not sys.stdin.isatty():
            raise NoPassword(
                "no terminal to ask for the admin password: use --password-file FILE or set "
                + PASSWORD_VARIABLE
            )
        first = getpass.getpass(f"password for admin {username}: ")
        if confirm and getpass.getpass("again: ") != first:
            raise NoPassword("passwords differ")
        return first

    return read


class CachedToken(msgspec.Struct):
    """One admin login, as kept for one server URL."""

    username: str
    token: str
    expires_at: str

    def usable(self, now: datetime | None = None) -> bool:
        """Whether the token still has more than :data:`EXPIRY_MARGIN` to live."""
        try:
            expires = datetime.fromisoformat(self.expires_at)
        except ValueError:
            return False
        return expires - EXPIRY_MARGIN > (now or datetime.now(UTC))


def default_token_file() -> Path:
    """``$XDG_CONFIG_HOME/siheyi/admin-tokens.json`` (``~/.config`` without the variable)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "siheyi" / "admin-tokens.json"


class TokenStore:
    """Admin tokens by server URL in one JSON file that only its owner can read (0600)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_token_file()

    def _load(self) -> dict[str, CachedToken]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=dict[str, CachedToken])
        except FileNotFoundError:
            return {}
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return {}  # unreadable or damaged: log in again, the file is rewritten

    def get(self, url: str) -> CachedToken | None:
        """The token kept for ``url``, if any (usable or not)."""
        return self._load().get(url)

    def put(self, url: str, token: CachedToken | None) -> None:
        """Keep (or with None forget) the token of ``url``; the file is replaced atomically."""
        tokens = self._load()
        if token is None:
            tokens.pop(url, None)
        else:
            tokens[url] = token
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(msgspec.json.encode(tokens))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a half-written copy of the tokens must not stay
            raise StoreError(f"{self.path}: {exc.strerror or exc}") from exc


def server_root(url: str) -> str:
    """The server's URL without a trailing slash; only http(s) with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidField(f"--server-url must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


class ApiClient:
    """A person's HTTP client of the server's API: logs in once, keeps the token per server
    URL (:class:`TokenStore`, mode 0600), and logs in again once when a kept token is refused.
    Subclasses name the login route and how the person is named on the command line."""

    #: Where to log in; both routes answer at least ``{token, expires_at}``.
    LOGIN_PATH = "/v1/login"
    #: The command-line option naming the person, and how messages call them.
    USER_OPTION = "--user"
    WHO = ""

    def __init__(
        self,
        url: str,
        *,
        user: str | None,
        password: Password,
        tls_ca: str | None = None,
        tokens: TokenStore | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.url = server_root(url)
        self.user = user
        self.password = password
        self.tokens = tokens or self.default_tokens()
        self.timeout_s = timeout_s
        self._ssl = None
        if self.url.startswith("https:"):
            try:
                self._ssl = ssl.create_default_context(cafile=tls_ca)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidField(f"--tls-ca {tls_ca}: {exc}") from exc

    def default_tokens(self) -> TokenStore:
        """Where tokens are kept unless the caller says."""
        return TokenStore()

    def _request(
        self, method: str, path: str, body: bytes | None, token: str | None
    ) -> urllib.request.Request:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return urllib.request.Request(self.url + path, data=body, headers=headers, method=method)

    def _send(
        self, method: str, path: str, body: bytes | None, token: str | None
    ) -> tuple[int, bytes, str]:
        """(status, body, Retry-After) of one request; a transport failure is Unavailable."""
        request = self._request(method, path, body, token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._ssl) as r:
                return r.status, r.read(), ""
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(), exc.headers.get("Retry-After", "")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"{self.url}: {reason}") from exc

    def _username(self) -> str:
        cached = self.tokens.get(self.url)
        username = self.user or (cached.username if cached else None)
        if not username:
            raise LoginFailed(
                f"no saved {self.WHO}login for {self.url}: use {self.USER_OPTION} USER"
            )
        return username

    def _login(self, username: str | None = None) -> str:
        username = username or self._username()
        body = msgspec.json.encode(LoginRequest(username, self.password(username)))
        status, data, retry = self._send("POST", self.LOGIN_PATH, body, None)
        if status == 401:
            raise LoginFailed(f"{self.url}: {self.WHO}login refused: wrong user name or password")
        if status == 429:
            raise Unavailable(f"{self.url}: too many logins, retry in {retry or 'a few'} s")
        if status != 200:
            raise Unavailable(f"{self.url}{self.LOGIN_PATH}: HTTP {status}")
        try:
            answer = msgspec.json.decode(data, type=LoginAnswer)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Unavailable(f"{self.url}{self.LOGIN_PATH}: unexpected answer: {exc}") from exc
        self.tokens.put(self.url, CachedToken(username, answer.token, answer.expires_at))
        return answer.token

    def _token(self) -> tuple[str, bool]:
        """A token and whether it was just issued (a refusal then is final)."""
        cached = self.tokens.get(self.url)
        if cached and cached.usable() and self.user in (None, cached.username):
            return cached.token, False
        return self._login(), True


class RemoteFleet(ApiClient):
    """The fleet through the admin API (:mod:`server.fleet.admin`), as an HTTP client."""

    LOGIN_PATH = "/v1/admin/login"
    USER_OPTION = "--admin"
    WHO = "admin "

    def _call(self, method: str, path: str, body: msgspec.Struct | None, answer: type[T]) -> T:
        data = None if body is None else msgspec.json.encode(body)
        token, fresh = self._token()
        status, raw, retry = self._send(method, path, data, token)
        if status == 401 and not fresh:
            username = self._username()
            self.tokens.put(self.url, None)  # refused: never offered again
            status, raw, retry = self._send(method, path, data, self._login(username))
        return self._decode(status, raw, retry, answer, path)

    def _decode(self, status: int, raw: bytes, retry: str, answer: type[T], path: str) -> T:
        if status == 200:
            try:
                return msgspec.json.decode(raw, type=answer)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise Unavailable(f"{self.url}{path}: unexpected answer: {exc}") from exc
        raise self._problem(status, raw, retry, path)

    def _problem(self, status: int, raw: bytes, retry: str, path: str) -> ProvisioningError:
        """The documented ``{"error", "detail"}`` answer as a provisioning error."""
        try:
            doc = json.loads(raw)
            code, detail = str(doc["error"]), str(doc["detail"])
        except (ValueError, TypeError, KeyError):
            code, detail = "http_error", raw[:200].decode("utf-8", "replace").strip()
        if status == 400:
            return InvalidField(detail)
        if status == 401:
            return LoginFailed(f"{self.url}: the admin login was refused again: {detail}")
        if status == 404:
            return DeviceNotFound(detail) if "/devices/" in path else UnknownSite(detail)
        if status == 409:
            return SerialExists(detail) if code == "serial_exists" else Refused(detail)
        if status == 413:
            return InvalidField(f"too much for one request: {detail}")
        if status == 429:
            return Unavailable(f"{self.url}: server busy, retry in {retry or 'a few'} s")
        return Unavailable(f"{self.url}{path}: HTTP {status}: {detail or code}")

    # -- the fleet ------------------------------------------------------------------------

    #: The server commits before ``before_commit`` hooks run.
    atomic = False

    def add_sites(self, names: Sequence[str]) -> SitesAdded:
        return self._call("POST", "/v1/admin/sites", SitesRequest(list(names)), SitesAdded)

    def list_sites(self) -> SiteList:
        return self._call("GET", "/v1/admin/sites", None, SiteList)

    def register(
        self,
        serial: str,
        request: RegisterRequest,
        before_commit: Callable[[Registered], None] | None = None,
    ) -> Registered:
        path = f"/v1/admin/devices/{quote(serial.strip(), safe='')}"
        registered = self._call("POST", path, request, Registered)
        if before_commit is not None:
            before_commit(registered)
        return registered

    def upsert(
        self,
        request: BulkRequest,
        before_commit: Callable[[BulkAnswer], None] | None = None,
    ) -> BulkAnswer:
        answer = self._call("POST", "/v1/admin/devices", request, BulkAnswer)
        if before_commit is not None:
            before_commit(answer)
        return answer

    def devices(
        self,
        *,
        site: str | None = None,
        gate: str | None = None,
        status: str | None = None,
        serial_prefix: str | None = None,
    ) -> DeviceList:
        query = {"site": site, "gate": gate, "status": status, "serial_prefix": serial_prefix}
        text = urlencode({k: v for k, v in query.items() if v})
        return self._call(
            "GET", "/v1/admin/devices" + (f"?{text}" if text else ""), None, DeviceList
        )

    def act(self, serial_or_id: str, action: DeviceAction) -> DeviceInfo:
        path = f"/v1/admin/devices/{quote(serial_or_id, safe='')}/{action}"
        return self._call("POST", path, None, DeviceInfo)

    def enrol_code(self, serial: str, ttl_s: float | None = None) -> EnrolCode:
        path = f"/v1/admin/devices/{quote(serial, safe='')}/enrol-code"
        return self._call("POST", path, EnrolCodeRequest(ttl_s), EnrolCode)

    def set_config(self, request: ConfigSetRequest) -> ConfigVersion:
        return self._call("POST", "/v1/admin/config", request, ConfigVersion)

    def config(self) -> ConfigLayers:
        return self._call("GET", "/v1/admin/config", None, ConfigLayers)


C = TypeVar("C", bound=ApiClient)


def add_connection_options(
    parser: argparse.ArgumentParser, client: type[ApiClient], who: str
) -> None:
    """The options every verb that only talks to the API takes (``kiosk audit``, ``kiosk
    release``): the server, the person (``client.USER_OPTION``, described by ``who``), the
    password file and the CA."""
    parser.add_argument(
        "--server-url",
        metavar="URL",
        default=os.environ.get("SIHEYI_SERVER_URL"),
        help="the server (default $SIHEYI_SERVER_URL)",
    )
    parser.add_argument(client.USER_OPTION, metavar="USER", help=who)
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="the password (else $SIHEYI_ADMIN_PASSWORD, else a prompt)",
    )
    parser.add_argument("--tls-ca", metavar="FILE", help="CA (PEM) for the server's certificate")


def client_from_args(client: type[C], args: argparse.Namespace) -> C:
    """The API client those options describe; ``--server-url`` is required."""
    if not args.server_url:
        raise InvalidField("--server-url URL is needed (or set $SIHEYI_SERVER_URL)")
    return client(
        args.server_url,
        user=getattr(args, client.USER_OPTION.removeprefix("--")),
        password=password_source(args.password_file),
        tls_ca=args.tls_ca,
    )
