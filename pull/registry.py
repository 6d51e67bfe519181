"""A client for the OCI distribution API: the `/v2/` HTTP API every image registry speaks.

One `RegistryClient` talks to one registry host over a keep-alive `httpx.Client`. It moves bytes and
maps failures to `pull.errors`; it does not decide whether bytes are trustworthy. Manifests are
returned raw for `pull.manifest` to check, and blobs are streamed unverified for `pull.store` to hash
(`get_blob`, for small blobs read whole, does check the digest).

Transport rules (DESIGN.md, "Registries and transport"):

- HTTPS with certificate verification. Plain HTTP only to loopback hosts or hosts named in
  `PullConfig.insecure_registries` (`PullConfig.allows_plain_http`), for registries, redirect
  targets and token services alike.
- Redirects are followed here, not by httpx, so each hop is checked: `Authorization` goes only to
  the registry's own origin (scheme, host, port), and a hop to plain HTTP obeys the rule above.
- 429/502/503/504 and dropped connections are retried with exponential backoff, honouring
  `Retry-After` up to `PullConfig.max_retry_after`. Bodies we cannot replay (streamed uploads) are
  sent once.
- No httpx exception escapes: unreachable -> `RegistryUnreachable`, 401/403 -> `AuthError`,
  404 -> `NotFound`, persistent 429/503 -> `Throttled`, anything else -> `RegistryError`.
  Messages are one line and name the host and repository.
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

import httpx

from pull.auth import Authenticator, repository_scope
from pull.config import PullConfig
from pull.credentials import CredentialStore
from pull.digest import Digest
from pull.errors import (
    AuthError,
    DigestMismatch,
    InvalidManifest,
    InvalidReference,
    NotFound,
    RegistryError,
    RegistryUnreachable,
    SizeMismatch,
    Throttled,
    UsageError,
)
from pull.mediatypes import ACCEPT, OCI_INDEX
from pull.pacing import Pace, active, paced
from pull.records import dataclass
from pull.strictjson import loads as strict_json
from pull.tlsconfig import context_for, host_tls, system_context

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_THROTTLE_STATUSES = frozenset({429, 503})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ERROR_BODY_MAX = 64 * 1024
"""Error bodies are read only this far, for the registry's error code and message."""
_TOKEN_BODY_MAX = 1024 * 1024
_TAG_PAGES_MAX = 1000

# The same grammar as pull.reference: it keeps repository names and tags from reshaping URL paths.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")

_E = TypeVar("_E", bound=BaseException)

_sleep = time.sleep  # replaced in tests to observe backoff without waiting


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest or index exactly as served: raw bytes (unverified) and the headers that describe it.

    `content_type` is the media type of the Content-Type header, lower-cased, without parameters.
    `docker_content_digest` is the registry's claim, a hint only: the digest is computed from `data`.
    """

    data: bytes
    content_type: str
    docker_content_digest: str | None


class RegistryClient:
    """Speaks the distribution API to one registry host, e.g. `RegistryClient(ref.api_host)`.

    `credentials` is consulted only when the registry challenges us; without it every request is
    anonymous. `transport` replaces the network (tests use `httpx.MockTransport`). Close the client
    (or use it as a context manager) to release its connections. Safe to share between threads.
    """

    def __init__(
        self,
        host: str,
        *,
        config: PullConfig = PullConfig(),
        credentials: CredentialStore | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not _HOST.fullmatch(host):
            raise InvalidReference(f"invalid registry host {host[:100]!r}: expected host or host:port")
        self.host = host
        self._config = config
        # HTTPS first, always. A loopback or --insecure-registry host that turns out not to speak
        # TLS at all is then spoken to in plain HTTP (`_plain_http_fallback`), as Docker does; a
        # certificate error is never a reason to fall back.
        self._may_fall_back = config.allows_plain_http(host)
        self._base = httpx.URL(f"https://{host}")
        self._origin = _origin(self._base)
        self._fallback_lock = threading.Lock()
        self._auth = Authenticator(host, credentials, self._token_request)
        mounts = _lazy_tls_mounts(config, host) if transport is None else None
        _read_larger_chunks()
        self._http = httpx.Client(
            # With `mounts`, every http(s) URL goes to them and the default transport is never used:
            # give it the plain one so that httpx does not build (and load CAs for) another.
            transport=mounts["http://"] if mounts else transport,
            mounts=mounts,
            verify=False if mounts or transport is not None else _tls_verification(config, host),
            timeout=httpx.Timeout(
                connect=config.connect_timeout,
                read=config.read_timeout,
                write=config.read_timeout,
                pool=config.connect_timeout,
            ),
            follow_redirects=False,  # every hop is checked by _send
            # Proxy settings from the environment apply to real networks only, never to a test transport.
            trust_env=transport is None,
            headers={
                "User-Agent": config.user_agent,
                # Digests cover the bytes as stored: never let a content coding (gzip) rewrite them.
                "Accept-Encoding": "identity",
            },
        )

    def mirror_mark(self) -> int:
        """A position in the record of reads answered by registries.conf mirrors (none here: only
        `pull.mirrors.ConfiguredClient` goes to mirrors)."""
        return 0

    def mirrors_since(self, mark: int) -> tuple[str, ...]:
        """The mirrors (`host/repository`) that answered a read since `mirror_mark()` gave `mark`."""
        return ()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the distribution API --------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: check that the registry speaks the API and, if it asks, accepts our credentials."""
        response = self._send("GET", self._base.join("/v2/"), where=self.host, scope=None)
        with contextlib.closing(response):
            self._expect(response, (200,), "the /v2/ API", self.host)

    def get_manifest(self, repository: str, identifier: str, accept: str = ACCEPT) -> FetchedManifest:
        """Fetch a manifest or index by tag or digest, reading at most `manifest_max_bytes`.

        Raises:
            InvalidManifest: the document is larger than `PullConfig.manifest_max_bytes` (nothing
                more than the cap and one network read is held in memory).
            NotFound, AuthError, Throttled, RegistryUnreachable, RegistryError.
        """
        where = self._where(repository)
        url = self._url(repository, "manifests", _checked_identifier(identifier))
        pace = Pace(self._config, where, f"manifest {identifier}")
        response = self._send(
            "GET", url, where=where, scope=repository_scope(repository), headers={"Accept": accept}, pace=pace
        )
        with contextlib.closing(response):
            self._expect(response, (200,), f"manifest {identifier}", where)
            cap = self._config.manifest_max_bytes
            declared = _content_length(response)
            too_big = f"manifest {identifier} from {where} is larger than the {cap}-byte limit"
            if declared is not None and declared > cap:
                raise InvalidManifest(f"{too_big} ({declared} bytes declared)")
            data, truncated = self._read_at_most(response, cap, where, pace)
            if truncated:
                raise InvalidManifest(too_big)
            return FetchedManifest(
                data=data,
                content_type=_media_type(response.headers.get("content-type")),
                docker_content_digest=response.headers.get("docker-content-digest"),
            )

    def head_manifest(
        self, repository: str, identifier: str, accept: str = ACCEPT
    ) -> tuple[str, str | None, int | None] | None:
        """HEAD a manifest: (content type, Docker-Content-Digest, Content-Length), or None if absent."""
        where = self._where(repository)
        url = self._url(repository, "manifests", _checked_identifier(identifier))
        response = self._send(
            "HEAD", url, where=where, scope=repository_scope(repository), headers={"Accept": accept}
        )
        with contextlib.closing(response):
            if response.status_code == 404:
                return None
            self._expect(response, (200,), f"manifest {identifier}", where)
            return (
                _media_type(response.headers.get("content-type")),
                response.headers.get("docker-content-digest"),
                _content_length(response),
            )

    @contextlib.contextmanager
    def stream_blob(self, repository: str, digest: Digest) -> Iterator[Iterator[bytes]]:
        """Stream a blob in pieces as the network delivers them, following redirects to storage backends.

        Pieces are not re-chunked (that would copy every byte once more); they are at most the
        transport's read size (64 KiB with httpcore).

        Nothing is verified here: the caller hashes and counts, and may stop early (leaving the
        `with` block closes the connection).

            with client.stream_blob("team/app", digest) as chunks:
                for chunk in chunks:
                    writer.write(chunk)

        Errors while reading are raised from the iterator as `RegistryUnreachable`, and so is a body
        slower than `PullConfig.min_bytes_per_second` or later than `PullConfig.request_deadline`.
        """
        where = self._where(repository)
        url = self._url(repository, "blobs", str(digest))
        pace = Pace(self._config, where, f"blob {digest}")
        response = self._send(
            "GET", url, where=where, scope=repository_scope(repository), follow_redirects=True, pace=pace
        )
        try:
            self._expect(response, (200,), f"blob {digest}", where)
            yield self._chunks(response, where, pace)
        finally:
            response.close()

    @contextlib.contextmanager
    def stream_url(self, url: str, digest: Digest) -> Iterator[Iterator[bytes]]:
        """Stream a non-distributable layer from one of its descriptor's `urls` (unverified, like
        `stream_blob`). The transport rules apply (HTTPS, or plain HTTP only where allowed), redirects
        are checked, and no credentials are sent: the URL is not the registry's."""
        where = f"non-distributable layer {digest} at {_one_line(url, limit=200)}"
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            raise RegistryError(f"{where}: not a valid URL") from None
        refusal = self._refusal(target)
        if refusal is not None:
            raise RegistryError(f"{where}: refusing {refusal}")
        pace = Pace(self._config, target.host, f"layer {digest}")
        response = self._send("GET", target, where=where, scope=None, follow_redirects=True, pace=pace)
        try:
            self._expect(response, (200,), f"layer {digest}", where)
            yield self._chunks(response, where, pace)
        finally:
            response.close()

    def get_blob(self, repository: str, digest: Digest, max_bytes: int) -> bytes:
        """Fetch a small blob (config, signature payload) whole, checking its size cap and digest.

        Raises:
            SizeMismatch: the blob is larger than `max_bytes` (reading stops there).
            DigestMismatch: the bytes do not hash to `digest`.
        """
        where = self._where(repository)
        url = self._url(repository, "blobs", str(digest))
        pace = Pace(self._config, where, f"blob {digest}")
        response = self._send(
            "GET", url, where=where, scope=repository_scope(repository), follow_redirects=True, pace=pace
        )
        with contextlib.closing(response):
            self._expect(response, (200,), f"blob {digest}", where)
            too_big = f"blob {digest} from {where} is larger than the expected {max_bytes} bytes"
            declared = _content_length(response)
            if declared is not None and declared > max_bytes:
                raise SizeMismatch(f"{too_big} ({declared} bytes declared)")
            data, truncated = self._read_at_most(response, max_bytes, where, pace)
        if truncated:
            raise SizeMismatch(too_big)
        actual = Digest.of_bytes(data, digest.algorithm)
        if actual != digest:
            raise DigestMismatch(f"blob {digest} from {where} hashes to {actual}")
        return data

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        """HEAD a blob: whether the registry has it in this repository."""
        return self._blob_exists(repository, digest, repository_scope(repository))

    def push_blob(self, repository: str, digest: Digest, size: int, chunks: Iterable[bytes] | bytes) -> None:
        """Upload a blob unless the registry already has it: POST an upload, then one streamed PUT.

        `chunks` may be an iterator (read once, never held in memory; such an upload is not retried)
        or bytes. The registry checks `digest`; we check that exactly `size` bytes were supplied.

        Raises:
            SizeMismatch: `chunks` held more or fewer than `size` bytes.
        """
        where = self._where(repository)
        scope = repository_scope(repository, push=True)
        if self._blob_exists(repository, digest, scope):
            return
        if isinstance(chunks, bytes):
            if len(chunks) != size:
                raise SizeMismatch(f"blob {digest} for {where} is {len(chunks)} bytes, not {size}")
            body: bytes | Iterable[bytes] = chunks
        else:
            body = _exactly(chunks, size, f"blob {digest} for {where}")
        started = self._send("POST", self._url(repository, "blobs", "uploads", ""), where=where, scope=scope)
        with contextlib.closing(started):
            self._expect(started, (202,), f"upload of blob {digest}", where)
            location = started.headers.get("location")
        if not location:
            raise RegistryError(f"{where} started an upload of blob {digest} without a Location")
        upload = self._checked_target(started.url, location, where, "upload location")
        response = self._send(
            "PUT",
            upload.copy_merge_params({"digest": str(digest)}),
            where=where,
            scope=scope,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=body,
        )
        with contextlib.closing(response):
            self._expect(response, (201,), f"upload of blob {digest}", where)

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> Digest:
        """PUT a manifest under a tag or its digest; returns its sha256 digest.

        Raises:
            DigestMismatch: `reference` is a digest that `data` does not hash to, or the registry's
                Docker-Content-Digest disagrees with the bytes we sent.
        """
        where = self._where(repository)
        identifier = _checked_identifier(reference)
        if not _HEADER_VALUE.fullmatch(media_type):
            raise UsageError(f"invalid media type {media_type[:100]!r}")
        digest = Digest.of_bytes(data)
        if ":" in identifier:
            named = Digest.parse(identifier)
            if Digest.of_bytes(data, named.algorithm) != named:
                raise DigestMismatch(f"manifest pushed to {where} as {named} does not hash to it")
        response = self._send(
            "PUT",
            self._url(repository, "manifests", identifier),
            where=where,
            scope=repository_scope(repository, push=True),
            headers={"Content-Type": media_type},
            body=data,
        )
        with contextlib.closing(response):
            self._expect(response, (200, 201), f"manifest {reference}", where)
            echoed = response.headers.get("docker-content-digest")
        if echoed:
            try:
                claimed = Digest.parse(echoed.strip())
            except InvalidReference:
                raise RegistryError(f"{where} answered a malformed Docker-Content-Digest") from None
            if Digest.of_bytes(data, claimed.algorithm) != claimed:
                raise DigestMismatch(
                    f"{where} stored manifest {reference} as {claimed}, but we sent {digest}"
                )
        return digest

    def list_tags(self, repository: str) -> list[str]:
        """All tags of a repository, following `Link: <…>; rel="next"` pagination."""
        url = self._url(repository, "tags", "list")
        tags: list[str] = []
        for data in self._pages(repository, url, "tag list"):
            tags.extend(_parse_tag_page(data, self._where(repository)))
        return tags

    def referrers(
        self, repository: str, digest: Digest, artifact_type: str | None = None
    ) -> list[bytes] | None:
        """Pages of the OCI 1.1 referrers API for `digest` (index documents), or None if unsupported.

        A 404 means the registry has no referrers API (distribution 2.8); registries that route the
        unknown path elsewhere answer 400, 405 or 406 (go-containerregistry falls back on 400, 404
        and 406 too). The caller then reads the `sha256-<hex>` tag schema, whose own failures still
        raise. Any other failure raises: it is "could not look", never "nothing attached". Pages are
        followed through `Link` like tag lists.
        """
        url = self._url(repository, "referrers", str(digest))
        if artifact_type is not None:
            url = url.copy_merge_params({"artifactType": artifact_type})
        try:
            return list(self._pages(repository, url, "referrers", accept=OCI_INDEX, absent_ok=True))
        except _Absent:
            return None

    def _pages(
        self,
        repository: str,
        url: httpx.URL,
        what: str,
        *,
        accept: str | None = None,
        absent_ok: bool = False,
    ) -> Iterator[bytes]:
        """The bodies of a paginated listing, each capped like a manifest.

        Pagination stays on the registry (our credentials go nowhere else) and must progress.
        With `absent_ok`, a 404 (or another "no such endpoint" status) on the first page raises
        `_Absent` instead of an error.
        """
        where = self._where(repository)
        seen = {str(url)}
        headers = {"Accept": accept} if accept else None
        for page in range(_TAG_PAGES_MAX):
            response = self._send(
                "GET", url, where=where, scope=repository_scope(repository), headers=headers
            )
            with contextlib.closing(response):
                if absent_ok and page == 0 and response.status_code in _UNSUPPORTED_STATUSES:
                    raise _Absent()
                self._expect(response, (200,), what, where)
                data, truncated = self._read_at_most(response, self._config.manifest_max_bytes, where)
                link = response.headers.get("link")
            if truncated:
                raise RegistryError(f"a {what} page from {where} is larger than the manifest size limit")
            yield data
            following = _next_link(link)
            if following is None:
                return
            url = self._checked_target(url, following, where, f"{what} page")
            if not self._is_registry(url) or str(url) in seen:
                raise RegistryError(f"{where} paginated its {what} to a foreign or repeated URL")
            seen.add(str(url))
        raise RegistryError(f"{where} paginated its {what} beyond {_TAG_PAGES_MAX} pages")

    # -- requests ---------------------------------------------------------------------------------

    def _blob_exists(self, repository: str, digest: Digest, scope: str) -> bool:
        where = self._where(repository)
        url = self._url(repository, "blobs", str(digest))
        response = self._send("HEAD", url, where=where, scope=scope, follow_redirects=True)
        with contextlib.closing(response):
            if response.status_code == 404:
                return False
            self._expect(response, (200,), f"blob {digest}", where)
            return True

    def _send(
        self,
        method: str,
        url: httpx.URL,
        *,
        where: str,
        scope: str | None,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        follow_redirects: bool = False,
        pace: Pace | None = None,
    ) -> httpx.Response:
        """Send a request; return the final response open for streaming (the caller closes it).

        `pace` bounds the whole exchange, retries and redirects included (default: a new one).

        Answers one authentication challenge from the registry and follows redirects when asked.
        The final status is not judged here (see `_expect`).
        """
        answered = False
        pace = pace or Pace(self._config, where, f"{method} {url.path}"[:200])
        for _ in range(self._config.max_redirects + 1):
            url = self._current_scheme(url)
            at = where if self._is_registry(url) else f"{where} (via {url.host})"
            response = self._attempt(
                method, url, where=at, scope=scope, headers=headers, body=body, pace=pace
            )
            url = self._current_scheme(url)  # the attempt may have found that the host has no TLS
            if response.status_code == 401 and not answered and self._is_registry(url) and _replayable(body):
                challenges = response.headers.get_list("www-authenticate")
                response.close()
                self._auth.challenged(challenges, scope, where)
                answered = True
                response = self._attempt(
                    method, url, where=at, scope=scope, headers=headers, body=body, pace=pace
                )
            if not (follow_redirects and response.status_code in _REDIRECT_STATUSES):
                return response
            location = response.headers.get("location")
            response.close()
            if not location:
                raise RegistryError(f"{where} redirected ({response.status_code}) without a Location")
            url = self._checked_target(url, location, where, "redirect")
        raise RegistryError(f"{where} redirected more than {self._config.max_redirects} times")

    def _attempt(
        self,
        method: str,
        url: httpx.URL,
        *,
        where: str,
        scope: str | None,
        headers: Mapping[str, str] | None,
        body: bytes | Iterable[bytes] | None,
        authorize: bool = True,
        pace: Pace | None = None,
    ) -> httpx.Response:
        """One request, retried on 429/502/503/504 and dropped connections when its body is replayable."""
        attempts = 1 + max(0, self._config.retries) if _replayable(body) else 1
        for attempt in range(attempts):
            final = attempt == attempts - 1
            request_headers = dict(headers or {})
            if authorize and self._is_registry(url):
                # The only place Authorization is added: requests to the registry's own origin.
                authorization = self._auth.authorization(scope)
                if authorization is not None:
                    request_headers["Authorization"] = authorization
            request = self._http.build_request(method, url, headers=request_headers, content=body)
            try:
                with active(pace):  # each socket read waits no longer than the pace allows
                    response = self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                plain = self._plain_http_fallback(url, exc)
                if plain is not None:
                    return self._attempt(
                        method,
                        plain,
                        where=where,
                        scope=scope,
                        headers=headers,
                        body=body,
                        authorize=authorize,
                        pace=pace,
                    )
                if pace is not None and (abandoned := pace.failure()) is not None:
                    raise abandoned from None
                if final or not _is_transient(exc):
                    raise _unreachable(exc, where) from None
                _sleep(self._backoff(attempt))
                continue
            if final or response.status_code not in _RETRY_STATUSES:
                return response
            delay = self._retry_delay(response, attempt, where)
            response.close()
            _sleep(delay)
        raise AssertionError("unreachable: the final attempt returns or raises")

    def _current_scheme(self, url: httpx.URL) -> httpx.URL:
        """`url`, in plain HTTP if it is this registry's and the registry turned out to have no TLS."""
        if (
            url.scheme == "https"
            and self._base.scheme == "http"
            and _origin(url.copy_with(scheme="http")) == self._origin
        ):
            return url.copy_with(scheme="http")
        return url

    def _plain_http_fallback(self, url: httpx.URL, exc: httpx.HTTPError) -> httpx.URL | None:
        """The plain-HTTP form of `url` when this registry may be spoken to in plain HTTP and the
        HTTPS attempt failed because the server does not speak TLS; from then on the client uses
        plain HTTP. None otherwise (certificate errors included: those are never bypassed)."""
        if not (self._may_fall_back and url.scheme == "https" and self._is_registry(url)):
            return None
        tls = _cause(exc, ssl.SSLError)
        if tls is None or getattr(tls, "reason", None) not in _NOT_TLS_REASONS:
            return None
        with self._fallback_lock:
            if self._base.scheme == "https":
                self._base = self._base.copy_with(scheme="http")
                self._origin = _origin(self._base)
        return url.copy_with(scheme="http")

    def _retry_delay(self, response: httpx.Response, attempt: int, where: str) -> float:
        advised = _retry_after(response.headers.get("retry-after"))
        if advised is None:
            return self._backoff(attempt)
        if advised > self._config.max_retry_after:
            response.close()
            raise Throttled(
                f"{where} asked us to retry after {advised:.0f}s ({response.status_code}), longer than "
                f"the {self._config.max_retry_after:g}s we wait; try again later",
                status_code=response.status_code,
            )
        return advised

    def _backoff(self, attempt: int) -> float:
        return float(min(self._config.backoff_base * 2**attempt, self._config.max_retry_after))

    def _token_request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        """`TokenFetch` for the Authenticator: the token service obeys the registries' transport rules."""
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            raise AuthError(f"{self.host} named an invalid token service URL") from None
        refusal = self._refusal(target)
        if refusal is not None:
            raise AuthError(f"refusing to ask token service of {self.host}: {refusal}")
        where = f"token service {target.host} of {self.host}"
        # Never authorize with our own (registry) header here: the Authenticator supplies its own.
        response = self._attempt(
            method, target, where=where, scope=None, headers=headers, body=body, authorize=False
        )
        with contextlib.closing(response):
            data, truncated = self._read_at_most(response, _TOKEN_BODY_MAX, where)
        if truncated:
            raise AuthError(f"{where} answered more than {_TOKEN_BODY_MAX} bytes")
        return response.status_code, data

    # -- responses --------------------------------------------------------------------------------

    def _expect(self, response: httpx.Response, ok: Container[int], what: str, where: str) -> None:
        """Raise the `pull.errors` type for `response` unless its status is in `ok`."""
        status = response.status_code
        if status in ok:
            return
        detail = _registry_error_detail(self._read_at_most(response, _ERROR_BODY_MAX, where)[0])
        suffix = f" ({detail})" if detail else ""
        if not self._is_registry(response.url):
            where = f"{where} (via {response.url.host})"
        phrase = _phrase(status)
        if status == 404:
            raise NotFound(f"{what} not found in {where}{suffix}", status_code=status)
        if status in (401, 403):
            if self._auth.sent_credentials:
                sent = f"credentials for {self.host} were sent"
            else:
                sent = f"no credentials were sent; `trust login {self.host}` if it needs them"
            if response.request.headers.get("authorization", "").lower().startswith("bearer "):
                # Not "refused us": the registry refused the token its own token service issued
                # (garbage, expired, or without the scope), which no login would change.
                service = self._auth.token_service or "its token service"
                how = "with credentials" if self._auth.sent_credentials else "anonymously"
                sent = f"it refused the token that {service} issued {how}"
            raise AuthError(
                f"{where} refused access to {what}: {status} {phrase}{suffix} ({sent})", status_code=status
            )
        if status in _THROTTLE_STATUSES:
            raise Throttled(
                f"{where} kept answering {status} {phrase} for {what}{suffix}; try again later",
                status_code=status,
            )
        raise RegistryError(f"{where} answered {status} {phrase} for {what}{suffix}", status_code=status)

    def _read_at_most(
        self, response: httpx.Response, limit: int, where: str, pace: Pace | None = None
    ) -> tuple[bytes, bool]:
        """Up to `limit` bytes of the body, and whether there was more (which is left unread)."""
        pace = pace or Pace(self._config, where, "the response")
        buffer = bytearray()
        try:
            for chunk in _body(response, pace=pace):
                pace.arrived(len(chunk))
                room = limit - len(buffer)
                if len(chunk) > room:
                    buffer += chunk[:room]
                    return bytes(buffer), True
                buffer += chunk
        except httpx.HTTPError as exc:
            raise pace.failure() or _unreachable(exc, where) from None
        return bytes(buffer), False

    def _chunks(self, response: httpx.Response, where: str, pace: Pace) -> Iterator[bytes]:
        try:
            for chunk in _body(response, pace=pace):
                pace.arrived(len(chunk))
                yield chunk
        except httpx.HTTPError as exc:
            raise pace.failure() or _unreachable(exc, where) from None

    # -- URLs -------------------------------------------------------------------------------------

    def _where(self, repository: str) -> str:
        if not _REPOSITORY.fullmatch(repository) or len(repository) > 255:
            raise InvalidReference(f"invalid repository name {repository[:100]!r}")
        return f"{self.host}/{repository}"

    def _url(self, repository: str, *parts: str) -> httpx.URL:
        return self._base.join("/v2/" + "/".join((repository, *parts)))

    def _is_registry(self, url: httpx.URL) -> bool:
        """Whether `url` is this registry's origin (an https URL made before the registry turned
        out to speak plain HTTP still is: `_send` rewrites it)."""
        return _origin(self._current_scheme(url)) == self._origin

    def _checked_target(self, current: httpx.URL, location: str, where: str, what: str) -> httpx.URL:
        """Resolve a Location (redirect, upload, next page) and refuse targets the transport rules forbid."""
        try:
            target = current.join(location)
        except httpx.InvalidURL:
            raise RegistryError(f"{where} sent an invalid {what} URL") from None
        refusal = self._refusal(target)
        if refusal is not None:
            raise RegistryError(f"{where}: refusing {what} to {refusal}")
        return target

    def _refusal(self, url: httpx.URL) -> str | None:
        """Why we must not send a request to `url`, or None if we may."""
        if url.scheme not in _DEFAULT_PORTS:
            return f"a {url.scheme or 'schemeless'} URL"
        if url.userinfo:
            return "a URL with embedded credentials"
        if url.scheme == "http" and not self._config.allows_plain_http(_authority(url)):
            return f"plain-HTTP {_authority(url)} (allow it with --insecure-registry {_authority(url)})"
        return None


# -- helpers (pure functions) -------------------------------------------------------------------------


_UNSUPPORTED_STATUSES = frozenset({400, 404, 405, 406})
"""Answers to a listing endpoint that mean "this registry has no such API", not "it failed"."""

READ_CHUNK = 1 << 20
"""Bytes asked of the socket per read. httpcore asks for 64 KiB; for blob streams 1 MiB cuts the
per-chunk Python work (h11 framing, hashing, the file write) up to 16-fold: a 336 MB pull from a
loopback registry went from 0.78 s to 0.58 s. Memory stays bounded: one buffer per connection."""


def _read_larger_chunks() -> None:
    from httpcore._sync import http11  # loaded with httpx's transport anyway

    if getattr(http11.HTTP11Connection, "READ_NUM_BYTES", READ_CHUNK) < READ_CHUNK:
        http11.HTTP11Connection.READ_NUM_BYTES = READ_CHUNK


class _LazyTransport(httpx.BaseTransport):
    """Builds its transport on the first request. Loading the CA bundle for TLS costs ~70 ms, which
    `trust run` against a loopback (plain HTTP) registry would otherwise pay for nothing."""

    def __init__(self, build: Callable[[], httpx.BaseTransport]) -> None:
        self._build = build
        self._transport: httpx.BaseTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self._transport is None:
                self._transport = self._build()
        return self._transport.handle_request(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _lazy_tls_mounts(config: PullConfig, host: str | None = None) -> dict[str, httpx.BaseTransport] | None:
    """Transports per scheme: plain HTTP needs no TLS context; HTTPS builds its own when first used.

    The registry's own origin gets the context with its certs.d CAs and client certificate
    (`pull.tlsconfig`); other HTTPS hosts (a storage backend a blob redirects to, a token service)
    get the system roots and never see the client certificate. None (httpx's defaults) when the
    environment names a proxy, whose mounts ours would replace.
    """
    if urllib.request.getproxies():
        return None
    plain: httpx.BaseTransport = paced(httpx.HTTPTransport(verify=False))  # no certificate to check
    if config.ca_bundle is not None:  # the user's own CA file: load it now, so a bad path fails early
        verify = _tls_verification(config)
        mounts: dict[str, httpx.BaseTransport] = {
            "http://": plain,
            "https://": paced(httpx.HTTPTransport(verify=verify)),
        }
    else:
        mounts = {
            "http://": plain,
            "https://": _LazyTransport(lambda: paced(httpx.HTTPTransport(verify=_tls_verification(config)))),
        }
    if host is not None and config.verify_tls:
        own = host_tls(host, config.cert_dir)  # read now: a broken directory is reported at once
        if own is not None:
            mounts[f"https://{host}"] = _LazyTransport(
                lambda: paced(httpx.HTTPTransport(verify=context_for(own, config.ca_bundle)))
            )
    return mounts


def _tls_verification(config: PullConfig, host: str | None = None) -> ssl.SSLContext | bool:
    if not config.verify_tls:
        return False
    own = host_tls(host, config.cert_dir) if host is not None else None
    if own is not None:
        return context_for(own, config.ca_bundle)
    if config.ca_bundle is None:
        return system_context()
    try:
        return ssl.create_default_context(cafile=config.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load CA bundle {config.ca_bundle}: {_one_line(str(exc))}") from None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme)


def _authority(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if url.port else host


class _Absent(Exception):
    """A listing endpoint answered 404 on its first page (the registry does not offer it)."""


def _body(
    response: httpx.Response, chunk_size: int | None = None, *, pace: Pace | None = None
) -> Iterator[bytes]:
    """The body exactly as sent (`Accept-Encoding: identity`; a content coding is never undone).

    Each socket read waits no longer than `pace` allows (`pull.pacing`), and under that pace only:
    the caller may read other responses between two pieces of this one.
    Responses built in memory, as `httpx.MockTransport` handlers usually build them, arrive already read.
    """
    if not response.is_stream_consumed:
        pieces = response.iter_raw(chunk_size)
        while True:
            with active(pace):
                piece = next(pieces, None)
            if piece is None:
                return
            yield piece
    content = response.content
    step = chunk_size or max(1, len(content))
    for start in range(0, len(content), step):
        yield content[start : start + step]


def _replayable(body: bytes | Iterable[bytes] | None) -> bool:
    return body is None or isinstance(body, bytes)


def _exactly(chunks: Iterable[bytes], size: int, what: str) -> Iterator[bytes]:
    """Pass `chunks` through, refusing to send more or fewer than `size` bytes.

    The last chunk is held back until the source is known to be exhausted: the registry must never
    receive a complete body from a source that turns out longer than declared.
    """
    sent = 0
    pending: bytes | None = None
    for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            raise SizeMismatch(f"{what} is longer than its declared {size} bytes")
        if pending is not None:
            yield pending
        pending = chunk
    if sent != size:
        raise SizeMismatch(f"{what} is {sent} bytes, not its declared {size}")
    if pending is not None:
        yield pending


def _checked_identifier(identifier: str) -> str:
    """A tag, or a digest (validated), safe to put after `/manifests/`."""
    if ":" in identifier:
        return str(Digest.parse(identifier))
    if not _TAG.fullmatch(identifier):
        raise InvalidReference(f"invalid tag {identifier[:100]!r}")
    return identifier


_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL"}
)
"""OpenSSL's reasons when the peer answered a ClientHello with something that is not TLS."""


def _is_transient(exc: httpx.HTTPError) -> bool:
    """A dropped or reset connection, worth retrying (unlike a refused connection or a timeout)."""
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return True
    return isinstance(exc, httpx.ConnectError) and _cause(exc, ConnectionResetError) is not None


def _unreachable(exc: httpx.HTTPError, where: str) -> RegistryUnreachable:
    if isinstance(exc, httpx.ConnectTimeout):
        reason = "timed out connecting"
    elif isinstance(exc, httpx.TimeoutException):
        reason = "timed out waiting for data"
    elif (tls := _cause(exc, ssl.SSLError)) is not None:
        detail = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or str(tls)
        reason = f"TLS failure ({detail})"
    elif isinstance(exc, httpx.ConnectError):
        reason = f"connection failed ({exc})"
    else:
        reason = f"{type(exc).__name__} ({exc})"
    return RegistryUnreachable(_one_line(f"cannot reach {where}: {reason}"))


def _cause(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of `kind` in `exc`'s chain of causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds from now: delta-seconds or an HTTP date. None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,10}", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "").strip()
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value) else None


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _phrase(status: int) -> str:
    # The standard phrase, not the server's: hostile reason phrases never reach a message.
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _registry_error_detail(body: bytes) -> str:
    """`CODE: message` from a distribution error body `{"errors": [{"code": …, "message": …}]}`."""
    try:
        errors = strict_json(body, "error body")["errors"]
        first = errors[0]
        code, message = first.get("code", ""), first.get("message", "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    text = ": ".join(str(part) for part in (code, message) if part)
    return _one_line(text, limit=160)


def _one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace and drop control characters, so registry text cannot forge output lines."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _next_link(header: str | None) -> str | None:
    """The target of `Link: <url>; rel="next"`, if any."""
    if not header:
        return None
    for match in re.finditer(r"<([^>]*)>([^<]*)", header):
        rel = re.search(r"""(?:^|;)\s*rel\s*=\s*"?([^";,]*)"?""", match.group(2))
        if rel is not None and "next" in rel.group(1).lower().split():
            return match.group(1)
    return None


def _parse_tag_page(data: bytes, where: str) -> list[str]:
    try:
        document = strict_json(data, "tag list")
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise RegistryError(f"{where} answered a malformed tag list")
    tags = document.get("tags") or []  # distribution answers `"tags": null` for an empty repository
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise RegistryError(f"{where} answered a malformed tag list")
    return tags
