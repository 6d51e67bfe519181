"""The HTTPS server: an ASGI app under uvicorn, TLS certificates re-read when they change.

Paths:

    POST /validate   AdmissionReview -> allow / deny (trust.webhook.handler)
    POST /mutate     the same, and a JSONPatch pinning each tag to the digest that was admitted
    GET  /healthz    the process answers
    GET  /readyz     a policy is loaded (a broken policy file at start-up never gets here)
    GET  /metrics    Prometheus text format

Why uvicorn: a maintained production ASGI server with keep-alive and TLS, started here with
workers sized to the CPU (each a process with its own decision cache; the listening socket is
shared). The app itself is a plain ASGI callable, no framework: five routes do not need one, and
every byte it reads is bounded (`MAX_REVIEW_BYTES`). Verification runs in threads, so a slow
registry never blocks the event loop; `Decider`'s deadline bounds every answer.

Certificates: cert-manager rewrites the Secret's files in place. The TLS context checks the files'
modification times (at most once a second) when a client says hello, and serves new connections
with the new certificate; open connections keep theirs.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn

from pull.errors import UsageError
from pull.records import asdict, dataclass, field
from trust.webhook.decisions import Decider, DeciderSettings
from trust.webhook.handler import handle
from trust.webhook.metrics import WebhookMetrics
from trust.webhook.review import MAX_REVIEW_BYTES, BadReview

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SETTINGS_ENV = "TRUST_WEBHOOK_SETTINGS"


@dataclass
class ServerSettings:
    """What `trust webhook serve` was given; passed to each worker process as JSON."""

    policy: str
    tls_cert: str
    tls_key: str
    host: str = "0.0.0.0"
    port: int = 8443
    workers: int = 0
    """0: one per CPU."""
    deadline: float = 8.0
    decision_ttl: float = 300.0
    denial_ttl: float = 10.0
    tag_ttl: float = 30.0
    platform: str | None = None
    exempt_namespaces: list[str] = field(default_factory=list)
    exempt_images: list[str] = field(default_factory=list)
    insecure_registries: list[str] = field(default_factory=list)
    log_decisions: bool = True


class WebhookApp:
    """The ASGI application."""

    def __init__(self, decider: Decider, *, log_decisions: bool = True) -> None:
        self.decider = decider
        self.metrics = WebhookMetrics()
        decider.stats.listeners.append(self.metrics.observe_cache)
        self.pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="review")
        self.log_decisions = log_decisions
        self._log_lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path in ("/validate", "/mutate"):
            if method != "POST":
                await _respond(send, 405, {"error": "use POST"})
                return
            await self._review(path, receive, send)
        elif path == "/healthz" and method == "GET":
            await _respond(send, 200, b"ok\n", "text/plain")
        elif path == "/readyz" and method == "GET":
            await _respond(send, 200, b"ready\n", "text/plain")
        elif path == "/metrics" and method == "GET":
            await _respond(send, 200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            await _respond(send, 404, {"error": f"no such path {path[:100]}"})

    async def _review(self, path: str, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = await _read_body(receive, MAX_REVIEW_BYTES)
        if body is None:
            self.metrics.bad_requests.inc()
            await _respond(send, 413, {"error": "request larger than the API server's 3 MiB limit"})
            return
        loop = asyncio.get_running_loop()
        try:
            handled = await loop.run_in_executor(
                self.pool, lambda: handle(body, self.decider, mutate=path == "/mutate", pool=self.pool)
            )
        except BadReview as err:
            self.metrics.bad_requests.inc()
            await _respond(send, 400, {"error": str(err)})
            return
        await _respond(send, 200, handled.response)
        elapsed = time.perf_counter() - started
        self.metrics.request(path, handled.verdict, handled.request.kind, handled.request.namespace, elapsed)
        for record in handled.records:
            self.metrics.decisions.labels(record["decision"]).inc()
        if self.log_decisions and handled.records:
            lines = "".join(
                json.dumps({**record, "durationMs": round(elapsed * 1000, 1)}) + "\n"
                for record in handled.records
            )
            with self._log_lock:
                sys.stdout.write(lines)
                sys.stdout.flush()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.decider.close()
                self.pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes `limit` bytes (nothing more is buffered)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: dict[str, Any] | bytes, content_type: str = "") -> None:
    if isinstance(body, dict):
        payload = json.dumps(body).encode()
        content_type = "application/json"
    else:
        payload = body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def decider_from(settings: ServerSettings) -> Decider:
    """The decider a server (or `trust webhook review`) uses. Raises `PolicyError` (exit 2)."""
    from policy.scope import parse_scope
    from pull.clients import RegistryClients
    from pull.config import PullConfig
    from pull.manifest import Platform

    clients = RegistryClients(PullConfig(insecure_registries=frozenset(settings.insecure_registries)))
    try:
        exempt = tuple(parse_scope(text) for text in settings.exempt_images)
    except UsageError as err:
        raise UsageError(f"--exempt-image: {err}") from None
    return Decider(
        Path(settings.policy),
        clients,
        DeciderSettings(
            decision_ttl=settings.decision_ttl,
            denial_ttl=settings.denial_ttl,
            tag_ttl=settings.tag_ttl,
            deadline=settings.deadline,
            platform=Platform.parse(settings.platform) if settings.platform else None,
            exempt_namespaces=tuple(settings.exempt_namespaces),
            exempt_images=exempt,
        ),
    )


def app_from_environment() -> WebhookApp:
    """uvicorn's factory in each worker process: settings come from `TRUST_WEBHOOK_SETTINGS`."""
    settings = ServerSettings(**json.loads(os.environ[SETTINGS_ENV]))
    return WebhookApp(decider_from(settings), log_decisions=settings.log_decisions)


def reloading_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context that switches to a new certificate when the files change."""
    return _ReloadingCertificate(cert, key).front


class _ReloadingCertificate:
    """The context that listens (`front`) hands each new connection the newest certificate's
    context from its SNI callback, which the TLS layer calls on every client hello."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.current = self._build()
        self.stamp = self._stamp()
        self.checked = time.monotonic()
        self.lock = threading.Lock()
        self.front = self._build()
        self.front.sni_callback = self._on_hello

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context

    def _stamp(self) -> tuple[float, float]:
        return (self.cert.stat().st_mtime, self.key.stat().st_mtime)

    def _on_hello(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self.checked >= 1.0:
                self.checked = now
                try:
                    stamp = self._stamp()
                    if stamp != self.stamp:
                        self.current, self.stamp = self._build(), stamp
                except (OSError, ssl.SSLError):
                    pass  # a half-written pair: keep serving the last good certificate
            connection.context = self.current


class _TLSConfig(uvicorn.Config):
    """uvicorn's Config with the reloading TLS context instead of a fixed one (pickled to workers)."""

    def load(self) -> None:
        super().load()
        if self.ssl_certfile and self.ssl_keyfile:
            self.ssl = reloading_tls_context(Path(str(self.ssl_certfile)), Path(str(self.ssl_keyfile)))


def serve(settings: ServerSettings) -> None:
    """Run the server until SIGTERM/SIGINT. Checks the policy and certificates first (exit 2)."""
    decider_from(settings).close()  # a policy that does not load fails here, not in every worker
    try:
        reloading_tls_context(Path(settings.tls_cert), Path(settings.tls_key))
    except (OSError, ssl.SSLError) as err:
        raise UsageError(f"cannot use --tls-cert/--tls-key: {err}") from None
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    config = _TLSConfig(
        "trust.webhook.server:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers or os.cpu_count() or 1,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=60,
        lifespan="on",
    )
    if config.workers == 1:
        uvicorn.Server(config).run()
        return
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config, sockets=[config.bind_socket()]).run()
