"""The clock of each request to a registry: a total deadline and a throughput floor, both held
within bounded time whatever the server does.

httpx's read timeout bounds one socket read only: a server sending a byte every 59 s never trips a
60 s timeout, and one sending nothing at all still gets the whole timeout per read, however little
of the request's deadline or of the floor's window is left. So each request gets a `Pace`:

- a total deadline (`PullConfig.request_deadline`), from sending the request to the last byte;
- a throughput floor: from the first byte of the answer's body on, each
  `PullConfig.throughput_window` seconds must bring at least
  `min_bytes_per_second * throughput_window` bytes (0 turns the floor off). Waiting for the answer
  to begin is latency, not throughput: the read timeout and the deadline bound it.

Counting happens as pieces arrive (`Pace.arrived`), and every socket read waits at most until the
nearer bound (`Pace.wait_limit`): `PacedBackend` wraps httpcore's network backend, and the pace a
read belongs to is the one `active()` set on the calling thread (the registry client activates a
request's pace while it sends the request and while it reads each piece of the answer). A read cut
short raises httpcore's `ReadTimeout`; the client then asks `Pace.failure()` why and says so, naming
the host (exit 5). So a stalled or trickling server is abandoned at the bound, not one read
timeout later.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import typing
from collections.abc import Iterator

import httpcore

from pull.config import PullConfig
from pull.errors import RegistryUnreachable

_local = threading.local()


class Pace:
    """The bounds of one request (see the module docstring); used by one thread at a time."""

    def __init__(self, config: PullConfig, where: str, what: str) -> None:
        self._config = config
        self._where = where
        self._what = what
        self._started = time.monotonic()
        self._window_started: float | None = None  # the floor applies once the body has begun
        self._window_bytes = 0
        self._why: str | None = None

    @property
    def _needed(self) -> float:
        """Bytes each window must bring (0: no floor)."""
        return max(0, self._config.min_bytes_per_second) * self._config.throughput_window

    def arrived(self, count: int) -> None:
        """Count `count` bytes just received; raises `RegistryUnreachable` when a bound has passed."""
        now = time.monotonic()
        if self._window_started is None:
            self._window_started = now
        self._window_bytes += count
        self._check(now)

    def wait_limit(self, timeout: float | None) -> float | None:
        """The longest the next socket read may wait: `timeout`, or less if a bound comes first.

        Raises httpcore's `ReadTimeout` when a bound has already passed (`failure()` says which).
        """
        now = time.monotonic()
        try:
            self._check(now)
        except RegistryUnreachable:
            raise httpcore.ReadTimeout(self._why) from None
        limit = self._started + self._config.request_deadline - now
        if self._window_started is not None and self._needed and self._window_bytes < self._needed:
            limit = min(limit, self._window_started + self._config.throughput_window - now)
        limit = max(limit, 0.001)  # a bound due now ends the read at once; `_check` then says why
        return limit if timeout is None else min(timeout, limit)

    def failure(self) -> RegistryUnreachable | None:
        """Why the request was abandoned, if one of its bounds did it (else None: another timeout)."""
        if self._why is None:
            with contextlib.suppress(RegistryUnreachable):
                self._check(time.monotonic())
        return RegistryUnreachable(self._why) if self._why is not None else None

    def _check(self, now: float) -> None:
        config = self._config
        if self._why is not None:
            raise RegistryUnreachable(self._why)
        if now - self._started >= config.request_deadline:
            self._why = (
                f"cannot reach {self._where}: {self._what} took longer than {config.request_deadline:g} s "
                "(the request deadline: --request-deadline, TRUST_REQUEST_DEADLINE)"
            )
            raise RegistryUnreachable(self._why)
        if self._window_started is None:
            return
        elapsed = now - self._window_started
        if elapsed < config.throughput_window:
            return
        if self._window_bytes < self._needed:
            rate = self._window_bytes / elapsed
            self._why = (
                f"cannot reach {self._where}: {self._what} arrived at {rate:.0f} bytes/s over "
                f"{elapsed:.0f} s, below the minimum of {config.min_bytes_per_second} bytes/s "
                "(--min-rate, TRUST_MIN_RATE)"
            )
            raise RegistryUnreachable(self._why)
        self._window_started, self._window_bytes = now, 0  # enough came: a new window starts


@contextlib.contextmanager
def active(pace: Pace | None) -> Iterator[None]:
    """Make `pace` the bounds of this thread's socket reads for the block (None: no bounds)."""
    previous = getattr(_local, "pace", None)
    _local.pace = pace
    try:
        yield
    finally:
        _local.pace = previous


def _current() -> Pace | None:
    return typing.cast("Pace | None", getattr(_local, "pace", None))


class _PacedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        pace = _current()
        if pace is None:
            return self._inner.read(max_bytes, timeout)
        return self._inner.read(max_bytes, pace.wait_limit(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        pace = _current()  # an upload to a server that reads slowly: the deadline holds too
        self._inner.write(buffer, timeout if pace is None else pace.wait_limit(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _PacedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class PacedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with every stream's reads bounded by the active `Pace`."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return _PacedStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return _PacedStream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


_T = typing.TypeVar("_T")


def paced(transport: _T) -> _T:
    """`transport` (an `httpx.HTTPTransport`) with its connections' reads paced.

    httpx does not let one hand httpcore a network backend, so the pool's is wrapped in place
    (`ConnectionPool._network_backend`, httpcore 1.0). If that ever moves, this fails loudly at
    the first client rather than silently dropping the bounds.
    """
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend):
        raise RuntimeError("httpcore changed: cannot bound the duration of requests (pull/pacing.py)")
    pool._network_backend = PacedBackend(backend)  # type: ignore[union-attr]
    return transport
