"""Named defaults for talking to registries and storing content (one frozen settings object)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pull.errors import UsageError
from pull.records import dataclass, field, replace

if TYPE_CHECKING:
    from pull.registries_conf import RegistriesConf

MANIFEST_MAX_BYTES = 4 * 1024 * 1024
"""Manifests, indexes and image configs larger than this are refused (as containerd/distribution do)."""

CONFIG_MAX_BYTES = 8 * 1024 * 1024
"""Image config blobs are parsed in memory, so they are capped too."""


@dataclass(frozen=True)
class PullConfig:
    """How `RegistryClient` and the pull pipeline behave. Safe by default."""

    manifest_max_bytes: int = MANIFEST_MAX_BYTES
    config_max_bytes: int = CONFIG_MAX_BYTES
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    """Seconds one socket read may wait. Alone it cannot stop a server that sends a byte every 59 s."""
    request_deadline: float = 3600.0
    """Seconds one request may take in all, from sending it to the last byte of its body (a 4 GB
    layer at 1.2 MB/s still fits). Every socket read is cut at it (`pull.pacing`), so it holds
    within a moment, whatever the server does. TRUST_REQUEST_DEADLINE / --request-deadline."""
    min_bytes_per_second: int = 10_000
    """A body arriving slower than this, averaged over each `throughput_window`, is abandoned (exit 5)
    at the window's end, not a read timeout later. 0: no floor. TRUST_MIN_RATE / --min-rate."""
    throughput_window: float = 30.0
    """Seconds over which the rate is measured: a real link's stalls of a few seconds pass."""
    verify_tls: bool = True
    ca_bundle: str | None = None
    insecure_registries: frozenset[str] = field(default_factory=frozenset)
    """Hosts (host or host:port) that may be reached over plain HTTP. Loopback always may."""
    cert_dir: str | None = None
    """`--cert-dir`: one certs.d-style directory for every registry instead of the certs.d search."""
    allow_nondistributable_urls: bool = False
    """Fetch a non-distributable layer the registry lacks from its descriptor's `urls` (checked as
    any blob). Off by default: those URLs are chosen by whoever wrote the manifest."""
    registries: RegistriesConf | None = None
    """registries.conf in effect; None: read from the default places when a client is opened."""
    max_parallel_blobs: int = 4
    retries: int = 4
    """Attempts after the first on 429/502/503/504 and connection resets."""
    backoff_base: float = 0.5
    max_retry_after: float = 30.0
    """A `Retry-After` longer than this is treated as a failure instead of a wait."""
    max_redirects: int = 5
    user_agent: str = "trust/0.1"

    def allows_plain_http(self, host: str) -> bool:
        """Whether `host` ("name", "name:port" or "[v6]:port") may be spoken to over plain HTTP.

        Loopback always may, as with Docker. Any other host only when listed in `insecure_registries`,
        either bare (any port) or as host:port. Names are never resolved: a DNS answer must not be able
        to turn TLS off.
        """
        hostname = _hostname(host)
        if hostname == "localhost" or _is_loopback_ip(hostname):
            return True
        allowed = {entry.lower() for entry in self.insecure_registries}
        return host.lower() in allowed or hostname in allowed


def _hostname(host: str) -> str:
    """The host part of an authority, lower-cased, without port or IPv6 brackets."""
    host = host.lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") > 1:  # a bare IPv6 address
        return host
    return host.partition(":")[0]


def _is_loopback_ip(hostname: str) -> bool:
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


DEADLINE_ENV = "TRUST_REQUEST_DEADLINE"
"""Seconds (or 90s, 15m, 2h) one request to a registry may take: `PullConfig.request_deadline`."""
MIN_RATE_ENV = "TRUST_MIN_RATE"
"""Bytes per second (or 10k, 10kB, 2M, 2MB; decimal) below which a transfer is abandoned; 0: no floor."""

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(s|m|h)?")
_DURATION_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600}
_RATE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)(?:B|B/s)?")
_RATE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


def parse_deadline(text: str, where: str = "--request-deadline") -> float:
    """Seconds from "600", "600s", "10m" or "1h"; positive, at most a week."""
    match = _DURATION.fullmatch(text.strip())
    seconds = float(match[1]) * _DURATION_UNITS[match[2]] if match else 0.0
    if not 0 < seconds <= 7 * 24 * 3600:
        raise UsageError(
            f"{where}: {text[:40]!r} is not a duration such as 600, 90s, 15m or 2h (at most a week)"
        )
    return seconds


def parse_rate(text: str, where: str = "--min-rate") -> int:
    """Bytes per second from "10000", "10k", "10kB", "2M" or "2MB/s" (decimal); 0 turns the floor off."""
    match = _RATE.fullmatch(text.strip())
    rate = float(match[1]) * _RATE_UNITS[match[2].lower()] if match else -1.0
    if not 0 <= rate <= 1e12:
        raise UsageError(f"{where}: {text[:40]!r} is not a rate such as 10000, 10k or 2MB (bytes per second)")
    return int(rate)


def with_pace(config: PullConfig, environ: Mapping[str, str] = os.environ) -> PullConfig:
    """`config` with the request deadline and minimum rate the environment sets (the CLI's global
    `--request-deadline` and `--min-rate` set them, so every command that talks to a registry, and
    the agent and webhook it may hand work to, gets them)."""
    if deadline := environ.get(DEADLINE_ENV):
        config = replace(config, request_deadline=parse_deadline(deadline, DEADLINE_ENV))
    if rate := environ.get(MIN_RATE_ENV):
        config = replace(config, min_bytes_per_second=parse_rate(rate, MIN_RATE_ENV))
    return config
