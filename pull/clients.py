"""One `RegistryClient` per API host for the duration of a command.

Signing or verifying may touch two registries (the image's and a signature repository's); a
policy gate touches many. Each host gets one keep-alive client, closed together at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from pull.config import PullConfig
from pull.credentials import CredentialStore
from pull.reference import LAYOUT_PREFIX
from pull.registry import RegistryClient


class RegistryClients:
    """Callable `clients(api_host) -> RegistryClient`; thread-safe; a context manager that closes them."""

    def __init__(self, config: PullConfig | None = None, credentials: CredentialStore | None = None) -> None:
        self.config = config or PullConfig()
        self._credentials = credentials or CredentialStore()
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def insecure(cls, hosts: Iterable[str] | None) -> RegistryClients:
        return cls(PullConfig(insecure_registries=frozenset(hosts or ())))

    def __call__(self, api_host: str) -> RegistryClient:
        """The client for `api_host`; an `oci:/abs/DIR` "host" (a layout reference) gets a `LayoutClient`."""
        with self._lock:
            if api_host not in self._clients:
                self._clients[api_host] = open_client(
                    api_host, config=self.config, credentials=self._credentials
                )
            return self._clients[api_host]

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

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
    return RegistryClient(api_host, config=config, credentials=credentials)
