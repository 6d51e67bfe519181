"""A registry as registries.conf describes it: mirrors first, the source last, blocked sources never.

`ConfiguredClient` stands where a `RegistryClient` for the source host would stand. Callers keep
the source's name (`docker.io/library/busybox`): the policy matches it, signatures are looked up
under it, digests are checked against it. Only the bytes may come from a mirror, and they are
verified exactly as the source's would be, because the verifying happens above this class
(`pull.manifest`, `pull.store`), which never learns where the bytes came from.

Reads go to the route's endpoints in order (`RegistriesConf.route`): each mirror whose
`pull-from-mirror` allows the request (a digest, or cosign's `sha256-….sig` tags, count as "by
digest"; any other tag as "by tag"), then the source unless it is blocked. A mirror that lacks the
object, refuses us or cannot be reached is skipped; bytes it serves that fail verification are an
error, not a reason to try elsewhere. Writes (sign, copy) go to the source only, and never to a
blocked one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from pull.digest import Digest
from pull.errors import CouldNotCheck, DeniedError, NotFound
from pull.mediatypes import ACCEPT
from pull.registries_conf import Endpoint, RegistriesConf, blocked_error, is_digest_addressed, registry_name
from pull.registry import FetchedManifest, RegistryClient

_T = TypeVar("_T")


class ConfiguredClient(RegistryClient):
    """`RegistryClient`'s interface for one source host, routed through registries.conf."""

    def __init__(
        self, api_host: str, conf: RegistriesConf, client_for: Callable[[Endpoint], RegistryClient]
    ) -> None:
        # No RegistryClient.__init__: the transports belong to the endpoint clients.
        self.host = api_host
        self._registry = registry_name(api_host)
        self._conf = conf
        self._client_for = client_for
        self.on_close: Callable[[], None] | None = None
        """Closes the endpoint clients when this client owns them (`pull.clients.open_client`)."""
        self.served_by: str | None = None
        """`host/repository` that answered the last read (a mirror's, or the source's)."""
        self._mirror_reads: list[str] = []
        """`host/repository` of the mirror behind every read a mirror answered, in order (append-only:
        `mirrors_since` reads a slice of it; list.append is atomic, and layers are read in threads)."""

    def mirror_mark(self) -> int:
        return len(self._mirror_reads)

    def mirrors_since(self, mark: int) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self._mirror_reads[mark:]))

    def close(self) -> None:
        if self.on_close is not None:  # else the endpoint clients belong to whoever made `client_for`
            self.on_close()

    # -- reads ------------------------------------------------------------------------------------

    def ping(self) -> None:
        self._write_endpoint("")
        self._client_for(self._conf.route(self._registry, "x").source).ping()

    def get_manifest(self, repository: str, identifier: str, accept: str = ACCEPT) -> FetchedManifest:
        return self._read(
            repository,
            is_digest_addressed(identifier),
            lambda client, repo: client.get_manifest(repo, identifier, accept),
        )

    def head_manifest(
        self, repository: str, identifier: str, accept: str = ACCEPT
    ) -> tuple[str, str | None, int | None] | None:
        return self._read(
            repository,
            is_digest_addressed(identifier),
            lambda client, repo: client.head_manifest(repo, identifier, accept),
            absent=lambda found: found is None,
        )

    @contextlib.contextmanager
    def stream_blob(self, repository: str, digest: Digest) -> Iterator[Iterator[bytes]]:
        failures: list[CouldNotCheck] = []
        for endpoint in self._endpoints(repository, by_digest=True):
            stream = self._client_for(endpoint).stream_blob(endpoint.repository, digest)
            try:
                chunks = stream.__enter__()
            except CouldNotCheck as exc:
                if not endpoint.mirror:
                    raise
                failures.append(exc)
                continue
            self._served(endpoint)
            with contextlib.ExitStack() as stack:
                stack.push(stream)
                yield chunks
            return
        raise self._exhausted(repository, failures)

    @contextlib.contextmanager
    def stream_url(self, url: str, digest: Digest) -> Iterator[Iterator[bytes]]:
        # Not the registry: any endpoint client's transport rules serve (none of its credentials go).
        endpoint = self._conf.route(self._registry, "x").source
        with self._client_for(endpoint).stream_url(url, digest) as chunks:
            yield chunks

    def get_blob(self, repository: str, digest: Digest, max_bytes: int) -> bytes:
        return self._read(repository, True, lambda client, repo: client.get_blob(repo, digest, max_bytes))

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        return self._read(
            repository,
            True,
            lambda client, repo: client.blob_exists(repo, digest),
            absent=lambda found: not found,
        )

    def list_tags(self, repository: str) -> list[str]:
        return self._read(repository, False, lambda client, repo: client.list_tags(repo))

    def referrers(
        self, repository: str, digest: Digest, artifact_type: str | None = None
    ) -> list[bytes] | None:
        return self._read(
            repository,
            True,
            lambda client, repo: client.referrers(repo, digest, artifact_type),
            absent=lambda found: found is None,
        )

    # -- writes: the source only ------------------------------------------------------------------

    def push_blob(self, repository: str, digest: Digest, size: int, chunks: Iterable[bytes] | bytes) -> None:
        endpoint = self._write_endpoint(repository)
        self._client_for(endpoint).push_blob(endpoint.repository, digest, size, chunks)

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> Digest:
        endpoint = self._write_endpoint(repository)
        return self._client_for(endpoint).push_manifest(endpoint.repository, reference, data, media_type)

    # -- routing ----------------------------------------------------------------------------------

    def _endpoints(self, repository: str, *, by_digest: bool) -> list[Endpoint]:
        self._where(repository)  # the repository grammar, before it is rewritten into another name
        return self._conf.route(self._registry, repository).endpoints(by_digest)

    def _write_endpoint(self, repository: str) -> Endpoint:
        route = self._conf.route(self._registry, repository or "x")
        if route.blocked_by is not None:
            raise blocked_error(f"{self._registry}/{repository}", route.blocked_by)
        return route.source

    def _read(
        self,
        repository: str,
        by_digest: bool,
        call: Callable[[RegistryClient, str], _T],
        absent: Callable[[_T], bool] | None = None,
    ) -> _T:
        failures: list[CouldNotCheck] = []
        endpoints = self._endpoints(repository, by_digest=by_digest)
        for position, endpoint in enumerate(endpoints):
            last = position == len(endpoints) - 1
            try:
                found = call(self._client_for(endpoint), endpoint.repository)
            except CouldNotCheck as exc:
                if last and not endpoint.mirror:
                    raise
                failures.append(exc)
                continue
            if absent is not None and absent(found) and not last:
                continue
            self._served(endpoint)
            return found
        raise self._exhausted(repository, failures)

    def _served(self, endpoint: Endpoint) -> None:
        self.served_by = f"{endpoint.host}/{endpoint.repository}"
        if endpoint.mirror:
            self._mirror_reads.append(self.served_by)

    def _exhausted(self, repository: str, failures: list[CouldNotCheck]) -> Exception:
        """The error once every endpoint failed (only mirrors can fail without raising at once)."""
        route = self._conf.route(self._registry, repository)
        name = f"{self._registry}/{repository}"
        if route.blocked_by is None:
            return failures[-1] if failures else CouldNotCheck(f"no endpoint for {name}")
        if failures and all(isinstance(failure, NotFound) for failure in failures):
            # Absent everywhere we may look: still "not found" (signature discovery relies on it),
            # with the reason the source was not asked.
            return NotFound(f"{failures[-1]}; the source {name} is blocked by {route.blocked_by}")
        error = blocked_error(name, route.blocked_by)
        return DeniedError(f"{error} (last mirror: {failures[-1]})") if failures else error
