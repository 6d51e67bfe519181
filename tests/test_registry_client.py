"""pull.registry.RegistryClient against the hostile registry, httpx.MockTransport faults, and a real registry.

Transport-level faults (TLS, https->http redirects, non-loopback hosts) use MockTransport: nothing here
leaves loopback.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from hostile import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    HostileRegistry,
    RecordedRequest,
    Reply,
    sha256,
)
from support.registry import Registry

from pull import registry as registry_module
from pull.config import PullConfig
from pull.credentials import Credential, CredentialStore
from pull.digest import Digest
from pull.errors import (
    AuthError,
    CouldNotCheck,
    DigestMismatch,
    InvalidManifest,
    InvalidReference,
    NotFound,
    RegistryError,
    RegistryUnreachable,
    SizeMismatch,
    Throttled,
    TrustError,
    UsageError,
)
from pull.registry import RegistryClient

FAST = PullConfig(backoff_base=0.01, retries=3, connect_timeout=2.0, read_timeout=5.0)
MiB = 1024 * 1024


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry() as server:
        yield server


@pytest.fixture
def storage() -> Iterator[HostileRegistry]:
    """A second origin (127.0.0.2) playing a blob storage backend."""
    with HostileRegistry("127.0.0.2") as server:
        yield server


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff waits, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(registry_module, "_sleep", recorded.append)
    return recorded


def client_for(server: HostileRegistry, config: PullConfig = FAST, **credentials: str) -> RegistryClient:
    store = None
    if credentials:
        store = CredentialStore.fixed(
            server.host, Credential(credentials["username"], credentials["password"])
        )
    return RegistryClient(server.host, config=config, credentials=store)


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response],
    host: str = "registry.example",
    config: PullConfig = FAST,
    credential: Credential | None = None,
) -> RegistryClient:
    store = CredentialStore.fixed(host, credential) if credential else None
    return RegistryClient(host, config=config, credentials=store, transport=httpx.MockTransport(handler))


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "\r" not in text
    return text


# -- pulling ----------------------------------------------------------------------------------------


def test_pull_round_trip(hostile: HostileRegistry) -> None:
    image = hostile.add_image("team/app", "v1", layers=[b"first layer", b"second"])
    with client_for(hostile, PullConfig()) as client:
        client.ping()
        fetched = client.get_manifest("team/app", "v1")
        assert fetched.data == image.manifest
        assert fetched.content_type == OCI_MANIFEST
        assert fetched.docker_content_digest == image.digest
        assert client.head_manifest("team/app", "v1") == (OCI_MANIFEST, image.digest, len(image.manifest))
        assert client.get_manifest("team/app", image.digest).data == image.manifest
        with client.stream_blob("team/app", Digest.parse(image.layers[0])) as chunks:
            pieces = list(chunks)
        assert b"".join(pieces) == b"first layer"
        assert client.get_blob("team/app", Digest.parse(image.config_digest), 4096) == image.config
        assert client.blob_exists("team/app", Digest.parse(image.layers[1]))
        assert not client.blob_exists("team/app", Digest.of_bytes(b"absent"))
    assert {r.header("accept-encoding") for r in hostile.requests} == {"identity"}
    manifest_request = next(r for r in hostile.requests if "/manifests/" in r.path)
    assert OCI_INDEX in (manifest_request.header("accept") or "")
    assert all(r.header("user-agent") == "trust/0.1" for r in hostile.requests)


def test_content_type_parameters_are_dropped(hostile: HostileRegistry) -> None:
    hostile.add_manifest("app", "v1", b"{}", "Application/Vnd.OCI.Image.Manifest.v1+JSON; charset=utf-8")
    with client_for(hostile) as client:
        assert client.get_manifest("app", "v1").content_type == OCI_MANIFEST


def test_keep_alive_reuses_one_connection(hostile: HostileRegistry) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    with client_for(hostile) as client:
        for _ in range(5):
            client.get_manifest("app", "v1")
    assert len(hostile.requests) == 5
    assert len({r.client_port for r in hostile.requests}) == 1


# -- untrusted documents and blobs are passed through, capped ------------------------------------------


def test_type_confusion_is_returned_raw_for_the_verifier(hostile: HostileRegistry) -> None:
    """Both `manifests` and `layers`, served as an index: passed on unchanged for pull.manifest to refuse."""
    confused = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "manifests": [], "layers": []}
    ).encode()
    hostile.add_manifest("app", "v1", confused, content_type=OCI_INDEX)
    with client_for(hostile) as client:
        fetched = client.get_manifest("app", "v1")
    assert (fetched.data, fetched.content_type) == (confused, OCI_INDEX)


def test_manifest_over_4_mib_is_refused(hostile: HostileRegistry) -> None:
    hostile.add_manifest("app", "big", b"{" + b" " * (4 * MiB - 1) + b"}", OCI_MANIFEST)  # 4 MiB + 1
    hostile.add_manifest("app", "max", b"{" + b" " * (4 * MiB - 2) + b"}", OCI_MANIFEST)  # exactly 4 MiB
    with client_for(hostile, PullConfig()) as client:
        with pytest.raises(
            InvalidManifest, match=r"manifest big from 127\.0\.0\.1:\d+/app is larger"
        ) as caught:
            client.get_manifest("app", "big")
        one_line(caught.value)
        assert len(client.get_manifest("app", "max").data) == 4 * MiB


def test_manifest_cap_stops_reading_an_endless_stream(hostile: HostileRegistry) -> None:
    def endless(_request: RecordedRequest) -> Reply:
        return Reply(
            200, (b" " * MiB for _ in range(256)), {"Content-Type": OCI_MANIFEST}
        )  # 256 MiB, no length

    hostile.add_route("GET", "/v2/app/manifests/huge", endless)
    with (
        client_for(hostile, PullConfig(manifest_max_bytes=MiB)) as client,
        pytest.raises(InvalidManifest, match="larger than the 1048576-byte limit"),
    ):
        client.get_manifest("app", "huge")
    request = hostile.requests[-1]
    assert request.finished.wait(5)
    assert request.bytes_sent < 64 * MiB  # we hung up long before the end


def test_manifest_cap_holds_no_more_than_one_read_beyond_it() -> None:
    produced: list[int] = []

    class Endless(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for _ in range(1024):  # 64 MiB: ends even if the cap were broken
                produced.append(64 * 1024)
                yield b" " * (64 * 1024)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": OCI_MANIFEST}, stream=Endless())

    with (
        mock_client(handler, config=PullConfig(manifest_max_bytes=MiB)) as client,
        pytest.raises(InvalidManifest),
    ):
        client.get_manifest("app", "v1")
    assert sum(produced) <= MiB + 64 * 1024


def test_declared_oversize_is_refused_without_reading(hostile: HostileRegistry) -> None:
    body = b"x" * (2 * MiB)
    hostile.add_route(
        "GET", "/v2/app/manifests/v1", lambda _r: Reply(200, body, {"Content-Type": OCI_MANIFEST})
    )
    with (
        client_for(hostile, PullConfig(manifest_max_bytes=MiB)) as client,
        pytest.raises(InvalidManifest, match="2097152 bytes declared"),
    ):
        client.get_manifest("app", "v1")


def test_blob_bytes_not_matching_digest(hostile: HostileRegistry) -> None:
    promised = Digest.of_bytes(b"the real layer")
    hostile.add_blob(str(promised), b"an evil layer")
    with client_for(hostile) as client:
        with client.stream_blob("app", promised) as chunks:
            assert b"".join(chunks) == b"an evil layer"  # streamed as is: the store verifies
        with pytest.raises(
            DigestMismatch, match=rf"blob {promised} from 127\.0\.0\.1:\d+/app hashes to sha256:"
        ):
            client.get_blob("app", promised, 1024)


def test_blob_longer_than_allowed(hostile: HostileRegistry) -> None:
    data = b"0123456789" * 10
    digest = Digest.parse(hostile.add_blob_content(data))
    with client_for(hostile) as client:
        with pytest.raises(SizeMismatch, match="100 bytes declared"):
            client.get_blob("app", digest, 50)
        hostile.add_route("GET", f"/v2/app/blobs/{digest}", lambda _r: Reply(200, iter([data])))  # no length
        with pytest.raises(SizeMismatch, match="larger than the expected 50 bytes"):
            client.get_blob("app", digest, 50)


def test_stream_blob_may_stop_early(hostile: HostileRegistry) -> None:
    big = hostile.add_blob("sha256:" + "a" * 64, b"z" * (64 * MiB))
    small = Digest.parse(hostile.add_blob_content(b"next"))
    with client_for(hostile) as client:
        with client.stream_blob("app", Digest.parse(big)) as chunks:
            first = next(iter(chunks))
        assert 0 < len(first) <= 1 * MiB  # a network read, not the whole blob
        assert client.get_blob("app", small, 10) == b"next"  # the client is still usable
    big_request = next(r for r in hostile.requests if r.path.endswith(big))
    assert big_request.finished.wait(5)
    assert big_request.bytes_sent < 48 * MiB


def test_stream_errors_mid_blob_are_registry_errors(hostile: HostileRegistry) -> None:
    digest = "sha256:" + "b" * 64

    def truncated(_request: RecordedRequest) -> Reply:
        # Promises more than it sends, then hangs up.
        return Reply(200, iter([b"x" * 1000]), {"Content-Length": "5000", "Connection": "close"})

    hostile.add_route("GET", f"/v2/app/blobs/{digest}", truncated)
    with (
        client_for(hostile) as client,
        client.stream_blob("app", Digest.parse(digest)) as chunks,
        pytest.raises(RegistryUnreachable, match=r"cannot reach 127\.0\.0\.1:\d+/app"),
    ):
        list(chunks)


# -- redirects and where Authorization goes ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_authorization_never_follows_a_redirect_to_another_host(
    hostile: HostileRegistry, storage: HostileRegistry, scheme: str
) -> None:
    digest = Digest.parse(hostile.add_blob_content(b"layer via storage"))
    if scheme == "basic":
        hostile.require_basic("alice", "s3cret")
    else:
        hostile.require_bearer(username="alice", password="s3cret")
    hostile.redirect_blobs_to(storage)
    with client_for(hostile, username="alice", password="s3cret") as client:
        with client.stream_blob("app", digest) as chunks:
            assert b"".join(chunks) == b"layer via storage"
        assert client.get_blob("app", digest, 100) == b"layer via storage"
        assert client.blob_exists("app", digest)
    assert [r.method for r in storage.requests] == ["GET", "GET", "HEAD"]
    assert all(r.header("authorization") is None for r in storage.requests)
    blob_requests = [r for r in hostile.requests if "/blobs/" in r.path]
    assert blob_requests[-1].header("authorization")  # the registry itself did get credentials


def test_errors_after_a_redirect_name_both_hosts(hostile: HostileRegistry, storage: HostileRegistry) -> None:
    digest = Digest.parse(hostile.add_blob_content(b"gone from storage"))
    hostile.redirect_blobs_to(storage)
    storage.fail_next("GET", f"/storage/{digest}", Reply(404))
    with client_for(hostile) as client, pytest.raises(NotFound) as caught:
        client.get_blob("app", digest, 100)
    assert re.search(r"not found in 127\.0\.0\.1:\d+/app \(via 127\.0\.0\.2\)", one_line(caught.value))


def test_same_origin_redirect_keeps_authorization(hostile: HostileRegistry) -> None:
    digest = Digest.parse(hostile.add_blob_content(b"moved"))
    hostile.require_basic("alice", "pw")
    hostile.add_route(
        "GET",
        "/v2/app/blobs/" + str(digest),
        lambda _r: Reply(302, b"", {"Location": "/storage/" + str(digest)}),
    )
    with client_for(hostile, username="alice", password="pw") as client:
        assert client.get_blob("app", digest, 10) == b"moved"
    assert hostile.requests[-1].path == f"/storage/{digest}"
    assert hostile.requests[-1].header("authorization") is not None


def test_other_port_is_another_origin() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.port == 8443:
            return httpx.Response(200, content=b"blob")
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(307, headers={"Location": "https://registry.example:8443/b"})

    with (
        mock_client(handler, credential=Credential("alice", "pw")) as client,
        client.stream_blob("app", Digest.of_bytes(b"blob")) as chunks,
    ):
        assert b"".join(chunks) == b"blob"
    assert seen[-2].headers.get("authorization") is not None
    assert seen[-1].url.port == 8443 and "authorization" not in seen[-1].headers


def test_redirect_from_https_to_plain_http_is_refused_unless_allowed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "storage.example":
            return httpx.Response(200, content=b"blob")
        return httpx.Response(307, headers={"Location": "http://storage.example/blob?sig=1"})

    digest = Digest.of_bytes(b"blob")
    with mock_client(handler) as client:
        with pytest.raises(
            RegistryError, match=r"refusing redirect to plain-HTTP storage\.example"
        ) as caught:
            client.get_blob("app", digest, 10)
        assert "registry.example/app" in one_line(caught.value)
    assert all(url.startswith("https://registry.example/") for url in seen)
    allowed = PullConfig(insecure_registries=frozenset({"storage.example"}), backoff_base=0.01)
    with mock_client(handler, config=allowed) as client:
        assert client.get_blob("app", digest, 10) == b"blob"
    assert seen[-1] == "http://storage.example/blob?sig=1"


@pytest.mark.parametrize("location", ["ftp://storage.example/x", "https://user:pw@storage.example/x"])
def test_redirect_to_odd_urls_is_refused(location: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": location})

    with mock_client(handler) as client, pytest.raises(RegistryError, match="refusing redirect"):
        client.get_blob("app", Digest.of_bytes(b""), 10)


def test_redirect_loops_are_bounded(hostile: HostileRegistry) -> None:
    hostile.add_route("GET", re.compile(r"/v2/app/blobs/.*"), lambda r: Reply(302, b"", {"Location": r.path}))
    with (
        client_for(hostile, PullConfig(max_redirects=3)) as client,
        pytest.raises(RegistryError, match="redirected more than 3 times"),
    ):
        client.get_blob("app", Digest.of_bytes(b""), 10)
    assert len(hostile.requests) == 4


def test_redirect_without_location(hostile: HostileRegistry) -> None:
    hostile.add_route("GET", re.compile(r"/v2/app/blobs/.*"), lambda _r: Reply(302))
    with client_for(hostile) as client, pytest.raises(RegistryError, match="without a Location"):
        client.get_blob("app", Digest.of_bytes(b""), 10)


# -- which hosts get plain HTTP -----------------------------------------------------------------------


def schemes_used(host: str, config: PullConfig = FAST, *, speaks_tls: bool = True) -> list[str]:
    """The schemes of the requests a ping makes, against a server that does (not) speak TLS."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.scheme)
        if request.url.scheme == "https" and not speaks_tls:
            # what the TLS layer raises when a plain-HTTP server answers the ClientHello
            error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
            error.reason = "WRONG_VERSION_NUMBER"  # type: ignore[misc]
            raise httpx.ConnectError("wrong version number") from error
        return httpx.Response(200, json={})

    with mock_client(handler, host=host, config=config) as client:
        client.ping()
        client.ping()
    return seen


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "127.1.2.3", "localhost:5000", "localhost", "[::1]:5000"])
def test_loopback_tries_https_first_and_falls_back_to_plain_http_once(host: str) -> None:
    assert schemes_used(host) == ["https", "https"]  # a TLS registry on loopback is spoken to in TLS
    assert schemes_used(host, speaks_tls=False) == ["https", "http", "http"]  # found out once


@pytest.mark.parametrize(
    "host", ["registry.example", "registry.example:5000", "10.0.0.5:5000", "localhost.example"]
)
def test_other_hosts_never_fall_back_to_plain_http(host: str) -> None:
    assert schemes_used(host) == ["https", "https"]
    with pytest.raises(RegistryUnreachable, match="WRONG_VERSION_NUMBER"):
        schemes_used(host, speaks_tls=False)


def test_insecure_registries_match_host_or_host_and_port() -> None:
    by_host = PullConfig(insecure_registries=frozenset({"registry.example"}))
    by_port = PullConfig(insecure_registries=frozenset({"Registry.Example:5000"}))
    assert schemes_used("registry.example:5000", by_host, speaks_tls=False)[-1] == "http"
    assert schemes_used("registry.example:5000", by_port, speaks_tls=False)[-1] == "http"
    with pytest.raises(RegistryUnreachable):
        schemes_used("registry.example:5001", by_port, speaks_tls=False)
    with pytest.raises(RegistryUnreachable):
        schemes_used("registry.example", by_port, speaks_tls=False)
    assert not PullConfig().allows_plain_http("127.0.0.1.example")


def test_plain_http_token_realm_refused_for_non_loopback_host() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("authorization") == "Bearer t":
            return httpx.Response(200, content=b"{}", headers={"Content-Type": OCI_MANIFEST})
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.example/token"'})

    with (
        mock_client(handler, credential=Credential("alice", "pw")) as client,
        pytest.raises(AuthError, match=r"plain-HTTP auth\.example"),
    ):
        client.get_manifest("app", "v1")
    assert not any("auth.example" in url for url in seen)  # the password never left
    allowed = PullConfig(insecure_registries=frozenset({"auth.example"}))
    with mock_client(handler, config=allowed) as client:
        assert client.get_manifest("app", "v1").data == b"{}"


def test_tls_failure_is_unreachable_with_the_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
        except ssl.SSLError as exc:
            raise httpx.ConnectError("handshake failed", request=request) from exc

    with mock_client(handler) as client, pytest.raises(RegistryUnreachable) as caught:
        client.ping()
    assert "TLS failure" in one_line(caught.value) and "registry.example" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_ca_bundle_that_cannot_be_read_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot load CA bundle"):
        RegistryClient("registry.example", config=PullConfig(ca_bundle="/nonexistent/ca.pem"))


# -- retries --------------------------------------------------------------------------------------------


def test_429_retry_after_seconds_is_honoured(hostile: HostileRegistry, sleeps: list[float]) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(429, b"", {"Retry-After": "2"}))
    with client_for(hostile) as client:
        assert client.get_manifest("app", "v1").data == b"{}"
    assert sleeps == [2.0]
    assert [r.path for r in hostile.requests] == ["/v2/app/manifests/v1"] * 2


def test_retry_after_really_waits(hostile: HostileRegistry) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(429, b"", {"Retry-After": "1"}))
    started = time.monotonic()
    with client_for(hostile) as client:
        client.get_manifest("app", "v1")
    assert time.monotonic() - started >= 0.95


def test_retry_after_http_date(hostile: HostileRegistry, sleeps: list[float]) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(503, b"", {"Retry-After": when}))
    with client_for(hostile) as client:
        client.get_manifest("app", "v1")
    assert len(sleeps) == 1 and 3.0 <= sleeps[0] <= 5.0


def test_retry_after_beyond_the_limit_gives_up_at_once(hostile: HostileRegistry, sleeps: list[float]) -> None:
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(429, b"", {"Retry-After": "3600"}), times=10)
    with client_for(hostile) as client, pytest.raises(Throttled, match="retry after 3600s") as caught:
        client.get_manifest("app", "v1")
    assert re.search(r"127\.0\.0\.1:\d+/app", one_line(caught.value))
    assert caught.value.status_code == 429
    assert sleeps == [] and len(hostile.requests) == 1


def test_exponential_backoff_without_retry_after(hostile: HostileRegistry, sleeps: list[float]) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(502), times=2)
    with client_for(hostile) as client:
        client.get_manifest("app", "v1")
    assert sleeps == [0.01, 0.02]


def test_persistent_throttling_is_bounded(hostile: HostileRegistry, sleeps: list[float]) -> None:
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(429, b"", {"Retry-After": "1"}), times=100)
    with client_for(hostile) as client, pytest.raises(Throttled, match="kept answering 429"):
        client.get_manifest("app", "v1")
    assert len(hostile.requests) == FAST.retries + 1
    assert sleeps == [1.0] * FAST.retries


def test_persistent_503_is_throttled_and_502_is_a_registry_error(
    hostile: HostileRegistry, sleeps: list[float]
) -> None:
    hostile.fail_next("GET", "/v2/app/manifests/a", Reply(503), times=100)
    hostile.fail_next("GET", "/v2/app/manifests/b", Reply(502), times=100)
    with client_for(hostile) as client:
        with pytest.raises(Throttled):
            client.get_manifest("app", "a")
        with pytest.raises(RegistryError) as caught:
            client.get_manifest("app", "b")
    assert type(caught.value) is RegistryError and caught.value.status_code == 502


def test_dropped_connection_is_retried(hostile: HostileRegistry, sleeps: list[float]) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(drop_connection=True), times=2)
    with client_for(hostile) as client:
        assert client.get_manifest("app", "v1").data == b"{}"
    assert len(sleeps) == 2


def test_persistent_drops_become_unreachable(hostile: HostileRegistry, sleeps: list[float]) -> None:
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(drop_connection=True), times=100)
    with (
        client_for(hostile) as client,
        pytest.raises(RegistryUnreachable, match=r"cannot reach 127\.0\.0\.1:\d+/app"),
    ):
        client.get_manifest("app", "v1")
    assert len(hostile.requests) == FAST.retries + 1


def test_streamed_upload_is_not_replayed(hostile: HostileRegistry, sleeps: list[float]) -> None:
    hostile.fail_next("PUT", re.compile(r"/v2/app/blobs/uploads/.*"), Reply(503), times=100)
    with client_for(hostile) as client, pytest.raises(Throttled):
        client.push_blob("app", Digest.of_bytes(b"abc"), 3, iter([b"abc"]))
    assert [r.method for r in hostile.requests].count("PUT") == 1


# -- errors map to pull.errors ---------------------------------------------------------------------------


def test_not_found(hostile: HostileRegistry) -> None:
    with client_for(hostile) as client, pytest.raises(NotFound) as caught:
        client.get_manifest("team/app", "v9")
    message = one_line(caught.value)
    assert re.fullmatch(
        r"manifest v9 not found in 127\.0\.0\.1:\d+/team/app \(MANIFEST_UNKNOWN: manifest unknown\)", message
    )
    assert caught.value.status_code == 404


def test_connection_refused_is_unreachable_at_once(sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once closed
    with (
        RegistryClient(f"127.0.0.1:{port}", config=FAST) as client,
        pytest.raises(RegistryUnreachable) as caught,
    ):
        client.get_manifest("app", "v1")
    assert f"127.0.0.1:{port}/app" in one_line(caught.value)
    assert not isinstance(caught.value.__cause__, httpx.HTTPError)
    assert sleeps == []  # a refused connection is not worth retrying


def test_read_timeout_is_unreachable(hostile: HostileRegistry) -> None:
    def slow(_request: RecordedRequest) -> Reply:
        time.sleep(1.0)
        return Reply(200, b"{}")

    hostile.add_route("GET", "/v2/app/manifests/v1", slow)
    with (
        client_for(hostile, PullConfig(read_timeout=0.2)) as client,
        pytest.raises(RegistryUnreachable, match="timed out"),
    ):
        client.get_manifest("app", "v1")


def test_other_statuses_are_registry_errors_with_status(hostile: HostileRegistry) -> None:
    body = json.dumps({"errors": [{"code": "DENIED\n", "message": "evil\r\nFAKE: line\x1b[31m"}]}).encode()
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(418, body))
    with client_for(hostile) as client, pytest.raises(RegistryError) as caught:
        client.get_manifest("app", "v1")
    message = one_line(caught.value)
    assert caught.value.status_code == 418
    assert "answered 418 I'm a Teapot for manifest v1" in message and "\x1b" not in message


def test_401_without_credentials_says_so(hostile: HostileRegistry) -> None:
    hostile.require_basic("alice", "pw")
    with client_for(hostile) as client, pytest.raises(AuthError) as caught:
        client.get_manifest("app", "v1")
    assert re.search(r"127\.0\.0\.1:\d+/app .*trust login 127\.0\.0\.1:\d+", one_line(caught.value))


def test_401_with_wrong_credentials_says_they_were_sent(hostile: HostileRegistry) -> None:
    hostile.require_basic("alice", "pw")
    with (
        client_for(hostile, username="alice", password="wrong") as client,
        pytest.raises(AuthError) as caught,
    ):
        client.get_manifest("app", "v1")
    message = one_line(caught.value)
    assert "401 Unauthorized" in message and "credentials for 127.0.0.1" in message and "were sent" in message
    assert "wrong" not in message
    assert len(hostile.requests) == 2  # one challenge, one answer: no loop


def test_403_is_an_auth_error(hostile: HostileRegistry) -> None:
    hostile.fail_next("GET", "/v2/app/manifests/v1", Reply(403))
    with client_for(hostile) as client, pytest.raises(AuthError, match="403 Forbidden"):
        client.get_manifest("app", "v1")


def test_no_httpx_exception_escapes_a_garbage_server() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def serve() -> None:
            for _ in range(FAST.retries + 2):  # the TLS attempt first (garbage: not TLS), then HTTP
                connection, _ = listener.accept()
                connection.recv(65536)
                connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                connection.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        config = PullConfig(backoff_base=0.0, retries=FAST.retries)
        with (
            RegistryClient(f"127.0.0.1:{port}", config=config) as client,
            pytest.raises(TrustError) as caught,
        ):
            client.ping()
        thread.join(5)
    assert isinstance(caught.value, RegistryUnreachable)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.get_manifest("../etc", "v1"), "invalid repository"),
        (lambda c: c.get_manifest("App", "v1"), "invalid repository"),
        (lambda c: c.get_manifest("app", "v1/../x"), "invalid tag"),
        (lambda c: c.get_manifest("app", "sha256:abc"), "malformed sha256 digest"),
        (lambda c: c.push_manifest("app", "v1", b"{}", "text/plain\r\nX: y"), "invalid media type"),
    ],
)
def test_malformed_names_never_reach_the_network(
    call: Callable[[RegistryClient], object], match: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected request {request.url}")

    with mock_client(handler) as client, pytest.raises(UsageError, match=match):
        call(client)


@pytest.mark.parametrize("host", ["user@registry.example", "registry.example/path", "", "host:port"])
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(InvalidReference, match="invalid registry host"):
        RegistryClient(host)


# -- authentication through the client ---------------------------------------------------------------


def test_bearer_anonymous_pull(hostile: HostileRegistry) -> None:
    image = hostile.add_image("library/busybox", "latest", layers=[b"l"])
    hostile.require_bearer()
    with client_for(hostile) as client:
        assert client.get_manifest("library/busybox", "latest").data == image.manifest
        assert client.get_blob("library/busybox", Digest.parse(image.config_digest), 10_000) == image.config
    token_requests = [r for r in hostile.requests if r.path == "/token"]
    assert len(token_requests) == 1 and token_requests[0].header("authorization") is None
    assert hostile.tokens_issued[0][1] == ["repository:library/busybox:pull"]


def test_bearer_with_credentials_reuses_the_token_and_renews_it_when_revoked(
    hostile: HostileRegistry,
) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    hostile.require_bearer(username="alice", password="pw")
    with client_for(hostile, username="alice", password="pw") as client:
        for _ in range(3):
            client.get_manifest("app", "v1")
        assert len(hostile.tokens_issued) == 1
        statuses_before = len(hostile.requests)
        hostile.revoke_tokens()
        client.get_manifest("app", "v1")
    assert len(hostile.tokens_issued) == 2
    assert [r.path for r in hostile.requests[statuses_before:]] == [
        "/v2/app/manifests/v1",  # stale token, 401
        "/token",
        "/v2/app/manifests/v1",
    ]


def test_unreachable_token_service(hostile: HostileRegistry, sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hostile.require_bearer(realm=f"http://127.0.0.1:{port}/token")
    with client_for(hostile) as client, pytest.raises(RegistryUnreachable) as caught:
        client.get_manifest("app", "v1")
    assert re.fullmatch(
        r"cannot reach token service 127\.0\.0\.1 of 127\.0\.0\.1:\d+: connection failed .*",
        one_line(caught.value),
    )


def test_bearer_identity_token(hostile: HostileRegistry) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    hostile.require_bearer(refresh_token="refresh-me", username="nobody", password="x")
    store = CredentialStore.fixed(hostile.host, Credential("", identity_token="refresh-me"))
    with RegistryClient(hostile.host, config=FAST, credentials=store) as client:
        assert client.get_manifest("app", "v1").data == b"{}"
    assert next(r for r in hostile.requests if r.path == "/token").method == "POST"


def test_basic_credentials_are_sent_only_after_a_challenge(hostile: HostileRegistry) -> None:
    hostile.add_manifest("app", "v1", b"{}")
    hostile.require_basic("alice", "pw")
    with client_for(hostile, username="alice", password="pw") as client:
        client.get_manifest("app", "v1")
        client.get_manifest("app", "v1")
    assert [r.header("authorization") is not None for r in hostile.requests] == [False, True, True]


def test_ping_checks_credentials(hostile: HostileRegistry) -> None:
    hostile.require_bearer(username="alice", password="pw")
    with client_for(hostile, username="alice", password="pw") as client:
        client.ping()
    with (
        client_for(hostile, username="alice", password="bad") as client,
        pytest.raises(AuthError, match="refused access"),
    ):
        client.ping()


def test_parallel_downloads_share_one_token(hostile: HostileRegistry) -> None:
    digests = [Digest.parse(hostile.add_blob_content(bytes([i]) * 1000)) for i in range(16)]
    hostile.require_bearer()
    errors: list[BaseException] = []
    with client_for(hostile) as client:
        client.ping()

        barrier = threading.Barrier(len(digests))

        def fetch(digest: Digest) -> None:
            try:
                barrier.wait(5)  # all threads ask for the (not yet fetched) token at once
                with client.stream_blob("app", digest) as chunks:
                    assert Digest.of_bytes(b"".join(chunks)) == digest
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=fetch, args=(d,)) for d in digests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert errors == []
    assert [scopes for _, scopes in hostile.tokens_issued].count(["repository:app:pull"]) == 1


# -- pushing ----------------------------------------------------------------------------------------


def test_push_blob_streams_and_skips_existing(hostile: HostileRegistry) -> None:
    data = b"0123456789" * 1000
    digest = Digest.of_bytes(data)
    hostile.require_bearer(username="alice", password="pw")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    with client_for(hostile, username="alice", password="pw") as client:
        client.push_blob("app", digest, len(data), chunks())
        assert hostile.blob(str(digest)) == data
        before = len(hostile.requests)
        client.push_blob("app", digest, len(data), chunks())
        assert [r.method for r in hostile.requests[before:]] == ["HEAD"]
        client.push_blob("app", Digest.of_bytes(b"small"), 5, b"small")
    assert hostile.blob(str(Digest.of_bytes(b"small"))) == b"small"
    put = next(r for r in hostile.requests if r.method == "PUT")
    assert put.query["digest"] == [str(digest)] and put.query["_state"] == ["x"]
    assert put.header("content-length") == str(len(data))
    assert hostile.tokens_issued[0][1] == ["repository:app:pull,push"]


@pytest.mark.parametrize("pieces", [[b"abc"], [b"abcde", b"f"]])
def test_push_blob_size_must_match(hostile: HostileRegistry, pieces: list[bytes]) -> None:
    with client_for(hostile) as client, pytest.raises(SizeMismatch):
        client.push_blob("app", Digest.of_bytes(b"abcde"), 5, iter(pieces))
    assert hostile.blob(str(Digest.of_bytes(b"abcde"))) is None


def test_push_blob_rejected_by_registry(hostile: HostileRegistry) -> None:
    with client_for(hostile) as client, pytest.raises(RegistryError, match="DIGEST_INVALID") as caught:
        client.push_blob("app", Digest.of_bytes(b"promised"), 5, b"other")
    assert caught.value.status_code == 400


def test_upload_location_on_another_origin_gets_no_authorization(
    hostile: HostileRegistry, storage: HostileRegistry
) -> None:
    hostile.require_basic("alice", "pw")
    storage.add_route("PUT", "/upload", lambda _r: Reply(201))
    hostile.add_route(
        "POST", "/v2/app/blobs/uploads/", lambda _r: Reply(202, b"", {"Location": f"{storage.url}/upload"})
    )
    with client_for(hostile, username="alice", password="pw") as client:
        client.push_blob("app", Digest.of_bytes(b"abc"), 3, b"abc")
    (put,) = storage.requests
    assert put.body == b"abc" and put.header("authorization") is None


def test_push_manifest(hostile: HostileRegistry) -> None:
    image_manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    with client_for(hostile) as client:
        digest = client.push_manifest("app", "v1", image_manifest, OCI_MANIFEST)
        assert str(digest) == sha256(image_manifest)
        assert client.push_manifest("app", str(digest), image_manifest, OCI_MANIFEST) == digest
    assert hostile.manifest("app", "v1") == (image_manifest, OCI_MANIFEST)


def test_push_manifest_digest_checks(hostile: HostileRegistry) -> None:
    with client_for(hostile) as client:
        with pytest.raises(DigestMismatch, match="does not hash to it"):
            client.push_manifest("app", str(Digest.of_bytes(b"other")), b"{}", OCI_MANIFEST)
        assert hostile.requests == []
        wrong = {"Docker-Content-Digest": str(Digest.of_bytes(b"other"))}
        hostile.fail_next("PUT", "/v2/app/manifests/v1", Reply(201, b"", wrong))
        with pytest.raises(DigestMismatch, match="stored manifest v1 as"):
            client.push_manifest("app", "v1", b"{}", OCI_MANIFEST)


# -- tags ----------------------------------------------------------------------------------------


def test_list_tags_follows_link_pages(hostile: HostileRegistry) -> None:
    for tag in ["a", "b", "c", "d", "e"]:
        hostile.add_manifest("app", tag, b"{}")
    hostile.tag_page_size = 2
    with client_for(hostile) as client:
        assert client.list_tags("app") == ["a", "b", "c", "d", "e"]
    assert [r.query.get("last") for r in hostile.requests] == [None, ["b"], ["d"]]


def test_list_tags_null_and_unknown(hostile: HostileRegistry) -> None:
    hostile.add_route("GET", "/v2/empty/tags/list", lambda _r: Reply(200, b'{"name": "empty", "tags": null}'))
    with client_for(hostile) as client:
        assert client.list_tags("empty") == []
        with pytest.raises(NotFound, match="NAME_UNKNOWN"):
            client.list_tags("nothing")


@pytest.mark.parametrize(
    ("link", "match"),
    [
        ('<http://127.0.0.2:1/v2/app/tags/list?last=a>; rel="next"', "foreign or repeated"),
        ('</v2/app/tags/list>; rel="next"', "foreign or repeated"),
    ],
)
def test_list_tags_pagination_must_stay_and_progress(hostile: HostileRegistry, link: str, match: str) -> None:
    hostile.add_route("GET", "/v2/app/tags/list", lambda _r: Reply(200, b'{"tags": ["a"]}', {"Link": link}))
    with client_for(hostile) as client, pytest.raises(RegistryError, match=match):
        client.list_tags("app")


def test_list_tags_malformed(hostile: HostileRegistry) -> None:
    hostile.add_route("GET", "/v2/app/tags/list", lambda _r: Reply(200, b'{"tags": [1]}'))
    with client_for(hostile) as client, pytest.raises(RegistryError, match="malformed tag list"):
        client.list_tags("app")


# -- against the real CNCF distribution registry (fixtures from conftest.py) ------------------------------


def push_image(client: RegistryClient, repository: str, layer: bytes) -> tuple[bytes, Digest, Digest]:
    """Push the blobs of a one-layer OCI image; returns (manifest, layer digest, config digest)."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    )
    config_bytes = config.encode()
    layer_digest, config_digest = Digest.of_bytes(layer), Digest.of_bytes(config_bytes)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": str(config_digest), "size": len(config_bytes)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": str(layer_digest), "size": len(layer)}],
        }
    ).encode()
    client.push_blob(repository, layer_digest, len(layer), iter([layer[:5], layer[5:]]))
    client.push_blob(repository, config_digest, len(config_bytes), config_bytes)
    return manifest, layer_digest, config_digest


def test_real_registry_push_pull_and_tags(registry: Registry, repo_name: str) -> None:
    host = registry.host
    layer = b"real registry layer"
    with RegistryClient(host, config=FAST) as client:
        client.ping()
        manifest, layer_digest, config_digest = push_image(client, repo_name, layer)
        assert client.blob_exists(repo_name, layer_digest)
        digest = client.push_manifest(repo_name, "v1", manifest, OCI_MANIFEST)
        client.push_manifest(repo_name, "v2", manifest, OCI_MANIFEST)
        fetched = client.get_manifest(repo_name, "v1")
        assert (fetched.data, fetched.content_type) == (manifest, OCI_MANIFEST)
        assert fetched.docker_content_digest == str(digest)
        assert client.head_manifest(repo_name, str(digest)) == (OCI_MANIFEST, str(digest), len(manifest))
        with client.stream_blob(repo_name, layer_digest) as chunks:
            assert b"".join(chunks) == layer
        assert b"amd64" in client.get_blob(repo_name, config_digest, 10_000)
        assert sorted(client.list_tags(repo_name)) == ["v1", "v2"]
        assert client.head_manifest(repo_name, "absent") is None
        with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
            client.get_manifest(repo_name, "absent")
        with pytest.raises(NotFound, match="BLOB_UNKNOWN"):
            client.get_blob(repo_name, Digest.of_bytes(b"absent"), 10)


def test_real_registry_basic_auth(auth_registry: Registry, repo_name: str) -> None:
    host = auth_registry.host
    assert auth_registry.auth is not None
    username, password = auth_registry.auth
    with RegistryClient(host, config=FAST) as anonymous, pytest.raises(AuthError, match="trust login"):
        anonymous.ping()
    wrong = CredentialStore.fixed(host, Credential(username, password + "x"))
    with (
        RegistryClient(host, config=FAST, credentials=wrong) as client,
        pytest.raises(AuthError, match="were sent"),
    ):
        client.ping()
    right = CredentialStore.fixed(host, Credential(username, password))
    with RegistryClient(host, config=FAST, credentials=right) as client:
        client.ping()
        manifest, layer_digest, _ = push_image(client, repo_name, b"authenticated layer")
        client.push_manifest(repo_name, "v1", manifest, OCI_MANIFEST)
        assert client.get_manifest(repo_name, "v1").data == manifest
        assert client.get_blob(repo_name, layer_digest, 100) == b"authenticated layer"
        assert client.list_tags(repo_name) == ["v1"]


# -- real TLS: the lazily built HTTPS transport still verifies certificates -----------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for 127.0.0.1; yields (port, cert)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trust test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            except (ssl.SSLError, OSError):
                pass  # the client refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], cert_path
    stop.set()
    thread.join()
    listener.close()


def test_https_verifies_certificates_against_the_system_roots(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    mounts = registry_module._lazy_tls_mounts(PullConfig())
    assert mounts is not None
    with (
        httpx.Client(mounts=mounts, transport=mounts["http://"]) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get(f"https://127.0.0.1:{port}/v2/")


def test_https_with_a_ca_bundle_trusts_that_ca(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    mounts = registry_module._lazy_tls_mounts(PullConfig(ca_bundle=str(cert)))
    assert mounts is not None
    with httpx.Client(mounts=mounts, transport=mounts["http://"]) as client:
        assert client.get(f"https://127.0.0.1:{port}/v2/").json() == {}


def test_a_garbage_token_the_registry_refuses_is_not_reported_as_refused_us(
    hostile: HostileRegistry,
) -> None:
    """The token service answers 200 with a token the registry does not accept: the message says
    the registry refused the issued token (no `trust login` would help), not "refused access"."""
    hostile.add_manifest("app", "v1", b"{}")
    hostile.require_bearer(realm=f"{hostile.url}/garbage-token")
    hostile.add_route(
        "GET", "/garbage-token", lambda _r: Reply(200, json.dumps({"token": "garbage"}).encode())
    )
    with client_for(hostile) as client, pytest.raises(AuthError) as caught:
        client.get_manifest("app", "v1")
    message = one_line(caught.value)
    assert f"it refused the token that {hostile.host} issued anonymously" in message, message
    assert "trust login" not in message
    assert isinstance(caught.value, CouldNotCheck)  # exit 5
