"""One `RegistryClient` per API host for the duration of a command.

Signing or verifying may touch two registries (the image's and a signature repository's); a
policy gate touches many. Each host gets one keep-alive client, closed together at the end.

registries.conf is read here, once per command (`pull.registries_conf.load`, unless the
`PullConfig` carries one): a host that one of its `[[registry]]` entries governs gets a
`pull.mirrors.ConfiguredClient`, which routes to mirrors, rewritten locations and refuses blocked
sources, over the same per-host clients.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from pull.config import PullConfig, with_pace
from pull.credentials import CredentialStore
from pull.mirrors import ConfiguredClient
from pull.records import replace
from pull.reference import LAYOUT_PREFIX
from pull.registries_conf import load as load_registries_conf
from pull.registries_conf import registry_name
from pull.registry import RegistryClient


class RegistryClients:
    """Callable `clients(api_host) -> RegistryClient`; thread-safe; a context manager that closes them."""

    def __init__(self, config: PullConfig | None = None, credentials: CredentialStore | None = None) -> None:
        self._given = config or PullConfig()
        self._loaded: PullConfig | None = None
        self._credentials = credentials or CredentialStore()
        self._clients: dict[str, RegistryClient] = {}
        self._direct: dict[str, RegistryClient] = {}
        self._lock = threading.RLock()

    @property
    def config(self) -> PullConfig:
        """The settings, with registries.conf loaded (on first use: reading it may fail)."""
        with self._lock:
            if self._loaded is None:
                self._loaded = with_registries(self._given)
            return self._loaded

    @classmethod
    def insecure(cls, hosts: Iterable[str] | None) -> RegistryClients:
        return cls(PullConfig(insecure_registries=frozenset(hosts or ())))

    def __call__(self, api_host: str) -> RegistryClient:
        """The client for `api_host`; an `oci:/abs/DIR` "host" (a layout reference) gets a `LayoutClient`."""
        with self._lock:
            if api_host not in self._clients:
                if api_host.startswith(LAYOUT_PREFIX):
                    self._clients[api_host] = open_client(api_host, config=self._given)
                else:
                    self._clients[api_host] = _routed(api_host, self.config, self._direct_client)
            return self._clients[api_host]

    def _direct_client(self, api_host: str) -> RegistryClient:
        with self._lock:
            if api_host not in self._direct:
                self._direct[api_host] = RegistryClient(
                    api_host, config=self.config, credentials=self._credentials
                )
            return self._direct[api_host]

    def close(self) -> None:
        with self._lock:
            for client in [*self._clients.values(), *self._direct.values()]:
                client.close()
            self._clients.clear()
            self._direct.clear()

    def __enter__(self) -> RegistryClients:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_client(
    api_host: str, *, config: PullConfig, credentials: CredentialStore | None = None
) -> RegistryClient:
    """A `RegistryClient` for a registry host, or a writable `LayoutClient` for `oci:/abs/DIR`.

    Layouts are opened writable because the commands that push (sign, copy) push there as they
    would to a registry; reading commands never call the push methods.
    """
    if api_host.startswith(LAYOUT_PREFIX):
        from pull.layout import LayoutClient

        return LayoutClient(Path(api_host[len(LAYOUT_PREFIX) :]), writable=True, config=config)
    clients = RegistryClients(config, credentials)
    client = clients(api_host)
    if isinstance(client, ConfiguredClient):
        clients._clients.pop(api_host)  # it closes its endpoint clients, and is not one of them
        client.on_close = clients.close
        return client
    clients._clients.clear()  # the direct client is returned alone; the caller closes it
    clients._direct.clear()
    return client


def with_registries(config: PullConfig) -> PullConfig:
    """`config` with registries.conf loaded (unless it has one), its insecure hosts allowed, and the
    request deadline and minimum rate of the environment (`pull.config.with_pace`)."""
    conf = config.registries if config.registries is not None else load_registries_conf()
    config = with_pace(config)  # the environment's request deadline and minimum rate, if set
    return replace(
        config, registries=conf, insecure_registries=config.insecure_registries | conf.insecure_hosts()
    )


def _routed(api_host: str, config: PullConfig, direct: Callable[[str], RegistryClient]) -> RegistryClient:
    """The direct client for `api_host`, or a routing one when registries.conf governs the host."""
    conf = config.registries
    if conf is None or not conf.may_govern(registry_name(api_host)):
        return direct(api_host)
    return ConfiguredClient(api_host, conf, lambda endpoint: direct(endpoint.host))
