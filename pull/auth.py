"""Answering a registry's authentication challenges: Basic, and Docker's Bearer token protocol.

A registry that wants credentials answers 401 with challenges such as

    WWW-Authenticate: Basic realm="Registry Realm"
    WWW-Authenticate: Bearer realm="https://auth.docker.io/token",service="registry.docker.io",
                      scope="repository:library/busybox:pull"

Basic: from then on every request to the registry carries `Authorization: Basic base64(user:password)`.

Bearer: we ask the token service at `realm` for a token for `service` and a scope such as
`repository:team/app:pull,push`, anonymously or with Basic credentials (GET), or with an identity
token through an OAuth2 refresh-token POST, and send `Authorization: Bearer <token>`. Tokens are
cached per scope until shortly before their `expires_in` runs out.

This module decides what to say, never where: `RegistryClient` asks for a header only for requests
to the registry's own origin, and performs the token request itself (through `TokenFetch`) so that
the same TLS, plain-HTTP, retry and error rules apply to the token service as to registries.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pull.credentials import Credential, CredentialStore
from pull.errors import AuthError
from pull.records import dataclass, field
from pull.strictjson import loads as strict_json

TokenFetch = Callable[[str, str, Mapping[str, str], bytes | None], tuple[int, bytes]]
"""`fetch(method, url, headers, body) -> (status, body)`: sends one request to a token service.

Provided by `RegistryClient`; raises `RegistryError` subclasses for transport failures or refused URLs.
"""

CLIENT_ID = "trust"
"""Sent as OAuth2 `client_id` when exchanging an identity token."""

DEFAULT_TOKEN_LIFETIME = 60.0
"""Seconds a token is valid when the service does not say (the Docker token spec's default)."""

_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_clock = time.monotonic  # replaced in tests to make tokens expire without waiting


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge: lower-cased scheme and parameter names."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


def repository_scope(repository: str, *, push: bool = False) -> str:
    """The token scope for reading (and with `push`, writing) one repository."""
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


def parse_www_authenticate(values: str | Iterable[str]) -> list[Challenge]:
    """Parse `WWW-Authenticate` header values into challenges, in order.

    Follows RFC 7235 leniently: several challenges per header or several headers, parameters
    separated by commas and/or spaces, quoted strings with escapes and commas, and unquoted values
    (even ones a strict parser would reject, such as URLs). Garbage is skipped, never fatal.
    """
    if isinstance(values, str):
        values = [values]
    challenges: list[Challenge] = []
    for value in values:
        challenges.extend(_parse_header(value))
    return challenges


def _parse_header(text: str) -> list[Challenge]:
    found: list[tuple[str, dict[str, str]]] = []
    pos, end = 0, len(text)
    while pos < end:
        while pos < end and text[pos] in " \t,":
            pos += 1
        start = pos
        while pos < end and _is_tchar(text[pos]):
            pos += 1
        token = text[start:pos]
        if not token:
            pos += 1  # a stray character: skip it so hostile input cannot stall us
            continue
        after = pos
        while after < end and text[after] in " \t":
            after += 1
        if after < end and text[after] == "=":
            # `name=value`: a parameter of the challenge being read.
            pos = after + 1
            while pos < end and text[pos] in " \t":
                pos += 1
            if pos < end and text[pos] == '"':
                value, pos = _quoted_string(text, pos)
            else:
                start = pos
                while pos < end and text[pos] not in " \t,":
                    pos += 1
                value = text[start:pos]
            if found:
                found[-1][1].setdefault(token.lower(), value)
        else:
            found.append((token.lower(), {}))
    return [Challenge(scheme, params) for scheme, params in found]


def _is_tchar(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char in "!#$%&'*+-.^_`|~")


def _quoted_string(text: str, pos: int) -> tuple[str, int]:
    """Read the quoted string starting at `text[pos] == '"'`; returns its value and the position after it."""
    value: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            value.append(text[pos + 1])
            pos += 2
            continue
        pos += 1
        if char == '"':
            break
        value.append(char)
    return "".join(value), pos


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


_NOT_LOOKED_UP = object()


class Authenticator:
    """Produces `Authorization` headers for one registry, answering its challenges.

    Thread-safe: parallel blob downloads share one instance, and a token is fetched once per scope.
    Credentials are looked up only when the registry first asks for them, so anonymous pulls never
    run a credential helper.
    """

    def __init__(self, registry: str, credentials: CredentialStore | None, fetch: TokenFetch) -> None:
        self.registry = registry
        self._store = credentials
        self._fetch = fetch
        self._lock = threading.Lock()
        self._credential: object = _NOT_LOOKED_UP
        self._challenge: Challenge | None = None
        self._tokens: dict[str | None, _Token] = {}
        self.sent_credentials = False
        """Whether any header or token request so far carried our credentials (for error messages)."""

    def authorization(self, scope: str | None) -> str | None:
        """The `Authorization` value for a registry request needing `scope`, or None to go anonymous.

        Before the registry has challenged us this is None. After a Bearer challenge it fetches (or
        reuses) a token for `scope`.

        Raises:
            AuthError: the token service refused us or answered nonsense.
            RegistryError: the token service could not be reached.
        """
        with self._lock:
            challenge = self._challenge
            if challenge is None:
                return None
            if challenge.scheme == "basic":
                credential = self._lookup()
                if credential is None or credential.identity_token:
                    return None
                self.sent_credentials = True
                return _basic(credential)
            token = self._tokens.get(scope)
            if token is None or token.expires_at <= _clock():
                token = self._fetch_token(challenge, scope)
                self._tokens[scope] = token
            return f"Bearer {token.value}"

    @property
    def token_service(self) -> str | None:
        """The host of the Bearer token service the registry named, if it named one."""
        challenge = self._challenge
        if challenge is None or challenge.scheme != "bearer":
            return None
        return urlsplit(challenge.params.get("realm", "")).netloc or None

    def challenged(self, www_authenticate: Iterable[str], scope: str | None, where: str) -> None:
        """Learn from a 401: remember its challenge and forget any token it refused.

        `where` names what was asked for (host/repository) in error messages.

        Raises:
            AuthError: there is no challenge we can answer (unknown scheme, or Basic without credentials).
        """
        challenges = parse_www_authenticate(www_authenticate)
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            offered = ", ".join(sorted({c.scheme for c in challenges})) or "no challenge"
            raise AuthError(f"{where} requires authentication we cannot answer ({offered[:80]})")
        if chosen.scheme == "bearer" and not chosen.params.get("realm"):
            raise AuthError(f"{where} sent a Bearer challenge without a realm")
        with self._lock:
            if chosen.scheme == "basic":
                credential = self._lookup()
                if credential is None or credential.identity_token:
                    raise AuthError(
                        f"{where} requires a username and password and none are configured for "
                        f"{self.registry}; run `trust login {self.registry}`"
                    )
            if chosen != self._challenge:
                self._tokens.clear()
            self._challenge = chosen
            self._tokens.pop(scope, None)

    def _lookup(self) -> Credential | None:
        if self._credential is _NOT_LOOKED_UP:
            self._credential = self._store.lookup(self.registry) if self._store is not None else None
        assert self._credential is None or isinstance(self._credential, Credential)
        return self._credential

    def _fetch_token(self, challenge: Challenge, scope: str | None) -> _Token:
        realm = challenge.params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AuthError(f"{self.registry} named an invalid token service realm {realm[:100]!r}")
        # Our own scope is exactly what the request needs; the challenge's scope only fills a gap (ping).
        scope = scope or challenge.params.get("scope")
        form = {"service": challenge.params.get("service", "")}
        if scope:
            form["scope"] = scope
        credential = self._lookup()
        if credential is not None and credential.identity_token:
            # An identity token is an OAuth2 refresh token: exchange it by POST (as Docker does).
            form |= {"grant_type": "refresh_token", "refresh_token": credential.identity_token}
            form["client_id"] = CLIENT_ID
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            status, body = self._fetch("POST", realm, headers, urlencode(form).encode())
            self.sent_credentials = True
        else:
            query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v) for k, v in form.items() if v]
            url = urlunsplit(parts._replace(query=urlencode(query)))
            headers = {}
            if credential is not None:
                headers["Authorization"] = _basic(credential)
                self.sent_credentials = True
            status, body = self._fetch("GET", url, headers, None)
        what = f"{self.registry} ({scope or 'no scope'})"
        if status in (401, 403):
            sent = "credentials were sent" if credential else "anonymously, no credentials configured"
            raise AuthError(
                f"token service {parts.netloc} refused access to {what} ({status}, {sent})",
                status_code=status,
            )
        if status != 200:
            raise AuthError(f"token service {parts.netloc} answered {status} for {what}", status_code=status)
        return _parse_token(body, parts.netloc, what)


def _parse_token(body: bytes, service_host: str, what: str) -> _Token:
    """Read `{"token": …}` or `{"access_token": …}` with an optional `expires_in` (seconds)."""
    try:
        answer = strict_json(body, "token response")
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise AuthError(f"token service {service_host} returned malformed JSON for {what}")
    value = answer.get("token") or answer.get("access_token")
    # The token goes into a header verbatim: refuse anything that could smuggle header syntax.
    if not isinstance(value, str) or not _TOKEN_CHARS.fullmatch(value):
        raise AuthError(f"token service {service_host} returned no usable token for {what}")
    lifetime = answer.get("expires_in")
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    # Renew a little early (10% of the lifetime) so a token does not expire in flight.
    return _Token(value, _clock() + float(lifetime) * 0.9)


def _basic(credential: Credential) -> str:
    raw = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
