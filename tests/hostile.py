"""`HostileRegistry`: a small OCI registry on loopback that can be told to lie, for tests.

It serves enough of the distribution API for a client to pull and push (ping, manifests and blobs
with GET/HEAD, uploads with POST/PATCH/PUT, manifest PUT, tag lists with Link paging, the OCI 1.1
referrers API) and records every request it receives. Tests then make it misbehave:

    from hostile import HostileRegistry, Reply

    with HostileRegistry() as registry:                     # http://127.0.0.1:<free port>
        image = registry.add_image("team/app", "v1", layers=[b"layer bytes"])
        client = RegistryClient(registry.host, config=PullConfig(backoff_base=0.01))

        registry.add_blob(image.layers[0], b"other bytes")   # bytes that do not match their digest
        registry.add_manifest("team/app", "big", b"{" + b" " * 5_000_000 + b"}", OCI_MANIFEST)
        registry.add_manifest("team/app", "v2", doc, content_type=OCI_INDEX)  # type confusion
        registry.fail_next("GET", "/v2/team/app/manifests/v1", Reply(429, headers={"Retry-After": "1"}))
        registry.require_bearer(username="alice", password="s3cret")       # 401 + /token endpoint
        registry.require_basic("alice", "s3cret")                           # 401 Basic (htpasswd-like)
        registry.add_route("GET", re.compile(r"/v2/.*/blobs/.*"), lambda request: Reply(500))

        with HostileRegistry("127.0.0.2") as storage:       # a second origin
            registry.redirect_blobs_to(storage)               # blob GETs answer 307 -> storage
            ...
            assert all(r.header("authorization") is None for r in storage.requests)

Routes added with `add_route`/`fail_next` are tried newest first, after authentication (which only
guards `/v2/…`) and before the built-in registry. A handler gets the `RecordedRequest` and returns a
`Reply`, whose body may be bytes or an iterator of bytes (streamed; `bytes_sent` on the recorded
request says how much of it the client actually read before hanging up).

Import it as `from hostile import …`: pytest puts `tests/` on `sys.path` because it has no
`__init__.py`.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import itertools
import json
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

_V2_PATH = re.compile(r"/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags|referrers)/(?P<rest>.*)")


def sha256(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class RecordedRequest:
    """One request as the server saw it. Header names are lower-cased."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client: str
    """The peer address, e.g. "127.0.0.1"."""
    client_port: int
    """The peer port: requests sharing it came over one keep-alive connection."""
    bytes_sent: int = 0
    """Response body bytes written before the response ended or the client hung up."""
    finished: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
    """Set once the server is done answering (so `bytes_sent` is final)."""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Reply:
    """What to answer. Content-Length is added for bytes bodies unless `headers` sets one (a lie, maybe).

    An iterator body is streamed; without an explicit Content-Length the connection is closed after it.
    `drop_connection` closes the socket without any answer (the client sees a dropped connection).
    """

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop_connection: bool = False


Handler = Callable[[RecordedRequest], Reply]


@dataclass(frozen=True)
class StoredImage:
    """What `add_image` put in the registry."""

    manifest: bytes
    digest: str
    config: bytes
    config_digest: str
    layers: tuple[str, ...]
    """Layer digests, in manifest order."""


@dataclass
class _Route:
    method: str
    path: str | re.Pattern[str]
    handler: Handler
    remaining: int | None

    def matches(self, request: RecordedRequest) -> bool:
        if self.method != request.method:
            return False
        if isinstance(self.path, str):
            return self.path == request.path
        return self.path.fullmatch(request.path) is not None


class HostileRegistry:
    """A threaded HTTP registry on `bind` (default 127.0.0.1) and a free port; see the module docstring.

    Start and stop it with `with`, or `start()`/`stop()`. State (`requests`, blobs, manifests) is
    safe to read from the test thread at any time.
    """

    def __init__(self, bind: str = "127.0.0.1", *, referrers_api: bool = True) -> None:
        self.bind = bind
        self.referrers_api = referrers_api
        """Serve `GET /v2/<name>/referrers/<digest>` (distribution 2.8 does not: it answers 404)."""
        self.requests: list[RecordedRequest] = []
        self.tokens_issued: list[tuple[str, list[str]]] = []
        """(token, scopes) for every token the /token endpoint handed out."""
        self.tag_page_size: int | None = None
        """When set, tag lists are paginated with this many tags per page (Link header)."""
        self._lock = threading.RLock()
        self._blobs: dict[str, bytes] = {}
        self._manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._uploads: dict[str, bytearray] = {}
        self._routes: list[_Route] = []
        self._blob_redirect: HostileRegistry | None = None
        self._redirect_status = 307
        self._basic: tuple[str, str] | None = None
        self._bearer: dict[str, object] | None = None
        self._valid_tokens: dict[str, list[str]] = {}
        self._counter = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> HostileRegistry:
        server = _Server((self.bind, 0), _make_handler(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.01,), name=f"hostile-{self.bind}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HostileRegistry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the registry first"
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>`: what `RegistryClient` and image references take."""
        return f"{self.bind}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- content --------------------------------------------------------------------------------------

    def add_blob(self, digest: str, data: bytes) -> str:
        """Serve `data` as blob `digest` (in every repository), whether or not it matches."""
        with self._lock:
            self._blobs[digest] = data
        return digest

    def add_blob_content(self, data: bytes) -> str:
        """Serve `data` under its true digest; returns the digest."""
        return self.add_blob(sha256(data), data)

    def blob(self, digest: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(digest)

    def add_manifest(
        self, repository: str, reference: str, data: bytes, content_type: str | None = None
    ) -> str:
        """Serve `data` under `reference` (tag or digest) and under its true digest; returns that digest.

        `content_type` defaults to the document's own `mediaType`; pass another to lie about it.
        """
        if content_type is None:
            try:
                content_type = str(json.loads(data).get("mediaType") or OCI_MANIFEST)
            except (ValueError, AttributeError):
                content_type = OCI_MANIFEST
        digest = sha256(data)
        with self._lock:
            self._manifests[(repository, reference)] = (data, content_type)
            self._manifests[(repository, digest)] = (data, content_type)
        return digest

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """(bytes, content type) stored under a tag or digest, e.g. after a client pushed it."""
        with self._lock:
            return self._manifests.get((repository, reference))

    def add_image(
        self,
        repository: str,
        tag: str | None,
        layers: Sequence[bytes],
        *,
        config: bytes | None = None,
        layer_media_type: str = OCI_LAYER_TAR,
        annotations: dict[str, str] | None = None,
    ) -> StoredImage:
        """Store a well-formed single-platform OCI image: layers, config, manifest (tagged if `tag`).

        The default config is linux/amd64 with diff_ids computed from the layers (gunzipped for
        the gzip media type).
        """
        layer_digests = tuple(self.add_blob_content(layer) for layer in layers)
        if config is None:
            diff_ids = [
                sha256(gzip.decompress(layer) if layer_media_type.endswith("+gzip") else layer)
                for layer in layers
            ]
            config = json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": diff_ids},
                },
                sort_keys=True,
            ).encode()
        config_digest = self.add_blob_content(config)
        document: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": layer_media_type, "digest": digest, "size": len(layer)}
                for digest, layer in zip(layer_digests, layers, strict=True)
            ],
        }
        if annotations:
            document["annotations"] = annotations
        manifest = json.dumps(document, sort_keys=True).encode()
        digest = self.add_manifest(repository, tag or sha256(manifest), manifest, OCI_MANIFEST)
        return StoredImage(manifest, digest, config, config_digest, layer_digests)

    def tags(self, repository: str) -> list[str]:
        with self._lock:
            return sorted(ref for repo, ref in self._manifests if repo == repository and ":" not in ref)

    # -- faults ---------------------------------------------------------------------------------------

    def add_route(
        self, method: str, path: str | re.Pattern[str], handler: Handler, *, times: int | None = None
    ) -> None:
        """Answer `method path` (exact path, or a regex matched against the whole path) with `handler`.

        With `times`, the route is used that many times and then forgotten.
        """
        with self._lock:
            self._routes.append(_Route(method.upper(), path, handler, times))

    def fail_next(self, method: str, path: str | re.Pattern[str], reply: Reply, *, times: int = 1) -> None:
        """Answer the next `times` matching requests with `reply`, then behave normally."""
        self.add_route(method, path, lambda _request: reply, times=times)

    def redirect_blobs_to(self, storage: HostileRegistry, status: int = 307) -> None:
        """Make blob GET/HEAD answer `status` with a Location on `storage`, which serves the bytes."""
        with self._lock:
            self._blob_redirect = storage
            self._redirect_status = status

    def require_basic(self, username: str, password: str) -> None:
        """Guard `/v2/…` with HTTP Basic (as distribution does with htpasswd)."""
        with self._lock:
            self._basic = (username, password)

    def require_bearer(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        refresh_token: str | None = None,
        service: str = "hostile-registry",
        expires_in: int | None = 300,
        realm: str | None = None,
    ) -> None:
        """Guard `/v2/…` with Docker token auth; the token service is `GET/POST /token` on this server.

        With `username`, the token service demands Basic credentials (else it is anonymous). With
        `refresh_token`, it also accepts an OAuth2 refresh-token POST. Tokens grant exactly the
        scopes requested; `tokens_issued` records them. `realm` overrides the advertised token URL.
        """
        with self._lock:
            self._bearer = {
                "username": username,
                "password": password,
                "refresh_token": refresh_token,
                "service": service,
                "expires_in": expires_in,
                "realm": realm,
            }

    def revoke_tokens(self) -> None:
        """Forget every issued token: the next request with one gets a fresh 401 challenge."""
        with self._lock:
            self._valid_tokens.clear()

    # -- request handling (server threads) ------------------------------------------------------------

    def _handle(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
        if request.path == "/token" and self._bearer is not None:
            return self._token_endpoint(request)
        if request.path.startswith("/v2/"):
            refusal = self._authenticate(request)
            if refusal is not None:
                return refusal
        route = self._take_route(request)
        if route is not None:
            return route(request)
        return self._registry(request)

    def _take_route(self, request: RecordedRequest) -> Handler | None:
        with self._lock:
            for route in reversed(self._routes):
                if route.matches(request):
                    if route.remaining is not None:
                        route.remaining -= 1
                        if route.remaining <= 0:
                            self._routes.remove(route)
                    return route.handler
        return None

    def _authenticate(self, request: RecordedRequest) -> Reply | None:
        given = request.header("authorization") or ""
        if self._basic is not None:
            expected = "Basic " + base64.b64encode(":".join(self._basic).encode()).decode()
            if given != expected:
                return _error(
                    401,
                    "UNAUTHORIZED",
                    "authentication required",
                    {"WWW-Authenticate": 'Basic realm="hostile"'},
                )
        if self._bearer is not None:
            needed = _needed_scope(request)
            scheme, _, token = given.partition(" ")
            with self._lock:
                granted = self._valid_tokens.get(token) if scheme == "Bearer" else None
            if granted is None or (needed is not None and not _covers(granted, needed)):
                realm = self._bearer["realm"] or f"{self.url}/token"
                challenge = f'Bearer realm="{realm}",service="{self._bearer["service"]}"'
                if needed is not None:
                    challenge += f',scope="{needed}"'
                if granted is not None:
                    challenge += ',error="insufficient_scope"'
                return _error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge})
        return None

    def _token_endpoint(self, request: RecordedRequest) -> Reply:
        bearer = self._bearer
        assert bearer is not None
        if request.method == "POST":
            form = parse_qs(request.body.decode())
            ok = bearer["refresh_token"] is not None and form.get("refresh_token") == [
                bearer["refresh_token"]
            ]
            scopes = " ".join(form.get("scope", [])).split()
        else:
            if bearer["username"] is not None:
                expected = f"{bearer['username']}:{bearer['password']}"
                ok = (
                    request.header("authorization") == "Basic " + base64.b64encode(expected.encode()).decode()
                )
            else:
                ok = True
            scopes = [s for value in request.query.get("scope", []) for s in value.split()]
        if not ok:
            return _error(401, "UNAUTHORIZED", "bad credentials")
        token = f"token-{next(self._counter)}"
        with self._lock:
            self._valid_tokens[token] = scopes
            self.tokens_issued.append((token, scopes))
        answer: dict[str, object] = {"token": token}
        if bearer["expires_in"] is not None:
            answer["expires_in"] = bearer["expires_in"]
        return _json(200, answer)

    def _registry(self, request: RecordedRequest) -> Reply:
        """The well-behaved registry behind the faults."""
        method, path = request.method, request.path
        if path == "/v2/" and method in ("GET", "HEAD"):
            return _json(200, {})
        blob = re.fullmatch(r"/storage/(?P<digest>[^/]+)", path)
        if blob and method in ("GET", "HEAD"):
            return self._serve_blob(blob["digest"], redirect=False)
        match = _V2_PATH.fullmatch(path)
        if match is None:
            return _error(404, "NOT_FOUND", "no such endpoint")
        name, kind, rest = match["name"], match["kind"], match["rest"]
        if kind == "manifests" and method in ("GET", "HEAD"):
            with self._lock:
                stored = self._manifests.get((name, rest))
            if stored is None:
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            data, content_type = stored
            return Reply(200, data, {"Content-Type": content_type, "Docker-Content-Digest": sha256(data)})
        if kind == "manifests" and method == "PUT":
            content_type = request.header("content-type") or OCI_MANIFEST
            digest = self.add_manifest(name, rest, request.body, content_type)
            location = f"/v2/{name}/manifests/{digest}"
            return Reply(201, b"", {"Location": location, "Docker-Content-Digest": digest})
        if kind == "blobs" and rest == "uploads/" and method == "POST":
            upload = f"upload-{next(self._counter)}"
            with self._lock:
                self._uploads[upload] = bytearray(request.body)
            return Reply(
                202, b"", {"Location": f"/v2/{name}/blobs/uploads/{upload}?_state=x", "Range": "0-0"}
            )
        if kind == "blobs" and rest.startswith("uploads/") and method in ("PATCH", "PUT"):
            return self._continue_upload(request, name, rest.removeprefix("uploads/"))
        if kind == "blobs" and method in ("GET", "HEAD"):
            return self._serve_blob(rest, redirect=True)
        if kind == "tags" and rest == "list" and method == "GET":
            return self._tag_page(request, name)
        if kind == "referrers" and method == "GET" and self.referrers_api:
            return self._referrers(name, rest)
        return _error(404, "NOT_FOUND", "no such endpoint")

    def _serve_blob(self, digest: str, *, redirect: bool) -> Reply:
        with self._lock:
            data = self._blobs.get(digest)
            storage = self._blob_redirect
        if data is None:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if redirect and storage is not None:
            storage.add_blob(digest, data)
            return Reply(self._redirect_status, b"", {"Location": f"{storage.url}/storage/{digest}"})
        return Reply(200, data, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest})

    def _continue_upload(self, request: RecordedRequest, name: str, upload: str) -> Reply:
        with self._lock:
            buffer = self._uploads.get(upload)
            if buffer is None:
                return _error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown")
            buffer += request.body
            if request.method == "PATCH":
                return Reply(
                    202,
                    b"",
                    {"Location": f"/v2/{name}/blobs/uploads/{upload}", "Range": f"0-{len(buffer) - 1}"},
                )
            del self._uploads[upload]
        digest = (request.query.get("digest") or [""])[0]
        if sha256(bytes(buffer)) != digest:
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        self.add_blob(digest, bytes(buffer))
        return Reply(201, b"", {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _tag_page(self, request: RecordedRequest, name: str) -> Reply:
        tags = self.tags(name)
        with self._lock:
            known = any(repo == name for repo, _ in self._manifests)
        if not known:
            return _error(404, "NAME_UNKNOWN", "repository name not known to registry")
        last = (request.query.get("last") or [""])[0]
        if last:
            tags = [tag for tag in tags if tag > last]
        size = int((request.query.get("n") or ["0"])[0]) or self.tag_page_size
        headers: dict[str, str] = {}
        if size is not None and len(tags) > size:
            tags = tags[:size]
            headers["Link"] = f'</v2/{name}/tags/list?n={size}&last={quote(tags[-1])}>; rel="next"'
        return _json(200, {"name": name, "tags": tags}, headers)

    def _referrers(self, name: str, subject: str) -> Reply:
        descriptors = []
        with self._lock:
            stored = [(ref, value) for (repo, ref), value in self._manifests.items() if repo == name]
        for reference, (data, content_type) in stored:
            if not reference.startswith("sha256:"):
                continue
            try:
                document = json.loads(data)
            except ValueError:
                continue
            if not isinstance(document, dict) or (document.get("subject") or {}).get("digest") != subject:
                continue
            descriptor: dict[str, object] = {
                "mediaType": content_type,
                "digest": reference,
                "size": len(data),
            }
            artifact_type = document.get("artifactType") or (document.get("config") or {}).get("mediaType")
            if artifact_type:
                descriptor["artifactType"] = artifact_type
            if document.get("annotations"):
                descriptor["annotations"] = document["annotations"]
            descriptors.append(descriptor)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
        return Reply(200, json.dumps(index).encode(), {"Content-Type": OCI_INDEX})


def _needed_scope(request: RecordedRequest) -> str | None:
    match = _V2_PATH.fullmatch(request.path)
    if match is None:
        return None
    action = "pull" if request.method in ("GET", "HEAD") else "push"
    return f"repository:{match['name']}:{action}"


def _covers(granted: list[str], needed: str) -> bool:
    """Whether scopes like `repository:app:pull,push` grant `repository:app:<action>`."""
    kind_name, _, action = needed.rpartition(":")
    for scope in granted:
        prefix, _, actions = scope.rpartition(":")
        if prefix == kind_name and (action in actions.split(",") or "*" in actions.split(",")):
            return True
    return False


def _json(status: int, document: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return _json(status, {"errors": [{"code": code, "message": message}]}, headers)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # parallel clients must not overflow the listen backlog (1 s SYN retry)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up on a stalled or broken reply resets its connection: what these
        # faults provoke, not a server error (socketserver would print a traceback into pytest's output).
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _make_handler(registry: HostileRegistry) -> type[http.server.BaseHTTPRequestHandler]:
    class _Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as registries speak it
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet test output

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            request = RecordedRequest(
                method=self.command,
                path=unquote(parts.path),
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self._read_body(),
                client=self.client_address[0],
                client_port=self.client_address[1],
            )
            try:
                reply = registry._handle(request)
                if reply.drop_connection:
                    self.close_connection = True
                    _drop(self.connection)
                    return
                self._answer(request, reply)
            finally:
                request.finished.set()

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return bytes(body)
                    body += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _answer(self, request: RecordedRequest, reply: Reply) -> None:
            headers = dict(reply.headers)
            if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers.items()):
                self.close_connection = True
            explicit_length = any(name.lower() == "content-length" for name in headers)
            if isinstance(reply.body, bytes) and not explicit_length:
                headers["Content-Length"] = str(len(reply.body))
            elif not explicit_length:
                headers["Connection"] = "close"  # a stream of unknown length ends when we hang up
                self.close_connection = True
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            chunks: Iterable[bytes] = [reply.body] if isinstance(reply.body, bytes) else reply.body
            try:
                for chunk in _slices(chunks):
                    self.wfile.write(chunk)
                    request.bytes_sent += len(chunk)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client stopped reading: that is allowed

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return _Handler


def _slices(chunks: Iterable[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """Write in modest pieces so `bytes_sent` tracks what the client really took."""
    for chunk in chunks:
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]


def _drop(connection: socket.socket) -> None:
    """Close a connection abruptly: the client sees it dropped without an answer."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
