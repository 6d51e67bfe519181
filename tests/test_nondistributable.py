"""Non-distributable ("foreign") layers: descriptors with `urls` whose blob the registry lacks.

The URLs are served by a static HTTP server on loopback (Python's http.server, in a thread): the
layer bytes a Windows base image's vendor would host. It counts requests, so a test can show that
nothing is fetched unless allowed.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.images import DOCKER, Layer, build_image, push_blob, push_manifest
from support.registry import Registry, start_registry

from trust.cli.app import main

FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass
class FileServer:
    port: int
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry that accepts manifests listing foreign layers by URL (as Docker Hub does for
    Windows base layers), without holding their blobs."""
    with start_registry(tmp_path_factory.mktemp("foreign"), foreign_urls="^https?://") as started:
        yield started


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    served = FileServer(0, {})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append(self.path)
            body = served.files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def push_foreign_image(registry: Registry, repository: str, urls: list[str]) -> tuple[str, Layer]:
    """A docker image whose base layer is foreign (listed with `urls`, not pushed) and a normal top layer."""
    base = Layer.from_files({"base.txt": b"vendor base layer\n"})
    top = Layer.from_files({"app.txt": b"application\n"})
    image = build_image([base, top], cmd=["/app"], manifest_type=DOCKER)
    manifest = image.manifest
    manifest["layers"][0]["mediaType"] = FOREIGN
    manifest["layers"][0]["urls"] = urls
    push_blob(registry, repository, image.config_bytes)
    push_blob(registry, repository, top.blob())
    data = json.dumps(manifest).encode()
    return push_manifest(registry, repository, "v1", data, DOCKER_MANIFEST), base


def test_a_foreign_layer_is_not_fetched_unless_allowed(
    registry: Registry,
    repo_name: str,
    tmp_path: Path,
    file_server: FileServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    digest, base = push_foreign_image(registry, repo_name, [file_server.url("/base.tar.gz")])
    file_server.files["/base.tar.gz"] = base.blob()
    ref = f"{registry.host}/{repo_name}@{digest}"
    store = tmp_path / "store"
    capsys.readouterr()

    assert main(["pull", "--store", str(store), ref]) == 5
    [line] = capsys.readouterr().err.splitlines()
    assert "is non-distributable (foreign)" in line and "--allow-nondistributable-urls" in line
    assert file_server.url("/base.tar.gz") in line
    assert file_server.requests == []

    assert main(["pull", "--allow-nondistributable-urls", "--store", str(store), ref]) == 0
    assert file_server.requests == ["/base.tar.gz"]
    assert (store / "blobs/sha256" / base.digest.split(":")[1]).read_bytes() == base.blob()


def test_bytes_from_a_url_are_checked_like_any_blob(
    registry: Registry, repo_name: str, tmp_path: Path, file_server: FileServer
) -> None:
    digest, base = push_foreign_image(
        registry, repo_name, [file_server.url("/missing"), file_server.url("/wrong")]
    )
    file_server.files["/wrong"] = base.blob()[:-4] + b"evil"
    store = tmp_path / "store"
    ref = f"{registry.host}/{repo_name}@{digest}"
    assert main(["pull", "--allow-nondistributable-urls", "--store", str(store), ref]) == 4
    assert file_server.requests == ["/missing", "/wrong"]  # the first URL failing moves to the next
    assert not (store / "blobs/sha256" / base.digest.split(":")[1]).exists()


# The registry itself refuses other schemes in `urls` (file:, ftp:); plain HTTP to a host that is
# not loopback nor --insecure-registry is ours to refuse (192.0.2.1 is TEST-NET-1: nothing is sent).
@pytest.mark.parametrize("url", ["http://192.0.2.1/base.tar.gz", "http://user:pw@127.0.0.1:1/x"])
def test_urls_obey_the_transport_rules(
    registry: Registry, repo_name: str, tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    digest, _ = push_foreign_image(registry, repo_name, [url])
    ref = f"{registry.host}/{repo_name}@{digest}"
    capsys.readouterr()
    assert main(["pull", "--allow-nondistributable-urls", "--store", str(tmp_path / "s"), ref]) == 5
    assert "refusing" in capsys.readouterr().err


def test_the_policy_setting_allows_urls_at_admission(
    registry: Registry, repo_name: str, tmp_path: Path, file_server: FileServer
) -> None:
    digest, base = push_foreign_image(registry, repo_name, [file_server.url("/base.tar.gz")])
    file_server.files["/base.tar.gz"] = base.blob()
    ref = f"{registry.host}/{repo_name}@{digest}"
    rules = (
        f"rules:\n  - scope: {registry.host}/{repo_name}\n    insecure-accept-anything: true\n"
        "default:\n  reject: true\n"
    )
    strict = tmp_path / "strict.yaml"
    strict.write_text("version: 1\n" + rules)
    allowing = tmp_path / "allowing.yaml"
    allowing.write_text("version: 1\nallow-nondistributable-urls: true\n" + rules)
    store = str(tmp_path / "store")
    assert main(["verify", "--pull", "--store", store, "--policy", str(strict), ref]) == 5
    assert file_server.requests == []
    assert main(["verify", "--pull", "--store", store, "--policy", str(allowing), ref]) == 0
    assert file_server.requests == ["/base.tar.gz"]
