"""Registry configuration as podman and docker users have it: certs.d, registries.conf, auth.json.

Real CNCF distribution registries on loopback, real TLS with the test CA (mutual TLS through
distribution's `clientcas`), the configuration written below a `TRUST_CONFIG_ROOT` of the test's own.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.images import push_image, simple_image
from support.registry import Registry, start_registry
from support.webpki import TestCA

from pull.config import PullConfig
from pull.credentials import CredentialStore
from pull.errors import DeniedError, UsageError
from pull.registries_conf import RegistriesConf, load
from pull.tlsconfig import host_tls
from trust.cli.app import main


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own system root (`TRUST_CONFIG_ROOT`) and an empty home."""
    root = tmp_path / "root"
    (root / "etc/containers").mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TRUST_CONFIG_ROOT", str(root))
    monkeypatch.setenv("HOME", str(home))
    for name in ("CONTAINERS_REGISTRIES_CONF", "TRUST_CERT_DIR", "XDG_RUNTIME_DIR", "REGISTRY_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    return root


def write_conf(etc: Path, text: str, name: str = "registries.conf") -> Path:
    path = etc / "etc/containers" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def trust_subprocess(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trust", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- registries.conf: parsing and routing ---------------------------------------------------------


def test_prefix_location_mirrors_and_pull_from_mirror(etc: Path) -> None:
    write_conf(
        etc,
        """
        [[registry]]
        prefix = "example.com/team"
        location = "internal.example:5000/mirror/team"

        [[registry.mirror]]
        location = "mirror-a.example/hub"
        pull-from-mirror = "digest-only"

        [[registry.mirror]]
        location = "mirror-b.example"
        pull-from-mirror = "tag-only"
        insecure = true

        [[registry]]
        location = "example.com"
        """,
    )
    conf = load()
    route = conf.route("example.com", "team/app")
    by_digest = [(e.host, e.repository) for e in route.endpoints(by_digest=True)]
    by_tag = [(e.host, e.repository) for e in route.endpoints(by_digest=False)]
    assert by_digest == [("mirror-a.example", "hub/app"), ("internal.example:5000", "mirror/team/app")]
    assert by_tag == [("mirror-b.example", "app"), ("internal.example:5000", "mirror/team/app")]
    # The longest prefix wins; outside it, the shorter entry (no rewrite, no mirror) governs.
    other = conf.route("example.com", "others/app")
    assert [(e.host, e.repository) for e in other.endpoints(by_digest=True)] == [
        ("example.com", "others/app")
    ]
    assert conf.insecure_hosts() == frozenset({"mirror-b.example"})
    assert PullConfig(insecure_registries=conf.insecure_hosts()).allows_plain_http("mirror-b.example")


def test_docker_hub_names_and_wildcards(etc: Path) -> None:
    write_conf(
        etc,
        """
        [[registry]]
        location = "docker.io"
        [[registry.mirror]]
        location = "mirror.example:5000"

        [[registry]]
        prefix = "*.internal.example"
        blocked = true
        """,
    )
    conf = load()
    route = conf.route("docker.io", "library/busybox")
    assert [(e.host, e.repository) for e in route.endpoints(by_digest=False)] == [
        ("mirror.example:5000", "library/busybox"),
        ("registry-1.docker.io", "library/busybox"),
    ]
    assert conf.route("a.internal.example", "x").blocked_by is not None
    assert conf.route("internal.example.org", "x").blocked_by is None


def test_drop_ins_override_by_prefix_and_merge_aliases(etc: Path) -> None:
    write_conf(
        etc,
        """
        unqualified-search-registries = ["a.example"]
        [aliases]
        "one" = "a.example/one"
        [[registry]]
        location = "a.example"
        blocked = true
        """,
    )
    write_conf(
        etc,
        """
        [aliases]
        "two" = "b.example/two"
        [[registry]]
        location = "a.example"
        """,
        name="registries.conf.d/50-unblock.conf",
    )
    conf = load()
    assert conf.route("a.example", "x").blocked_by is None
    assert conf.qualify("one:v1") == "a.example/one:v1"
    assert conf.qualify("two") == "b.example/two"


def test_a_blocked_registry_is_named_with_file_and_line(etc: Path) -> None:
    path = write_conf(
        etc,
        """
        # comment
        [[registry]]
        location = "other.example"

        [[registry]]
        location = "blocked.example"
        insecure = false
        blocked = true
        """,
    )
    conf = load()
    with pytest.raises(DeniedError, match=rf"blocked by {path}:9 "):
        conf.refuse_blocked("blocked.example", "team/app")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[registries.search]\nregistries = ['a.example']\n", "version 1 format"),
        (
            "[[registry]]\nlocation = 'a.example'\nblocked = 'yes'\n",
            r"registries.conf:1: blocked must be true",
        ),
        (
            "[[registry]]\nlocation = 'a.example'\nmirrors = []\n",
            r"registries.conf:3: unknown \[\[registry\]\] key",
        ),
        (
            "[[registry]]\nlocation = 'a.example'\n[[registry.mirror]]\nlocation = 'm.example'\n"
            "pull-from-mirror = 'sometimes'\n",
            r"registries.conf:3: pull-from-mirror must be one of",
        ),
        ("[[registry]]\nlocation = 'a.example/UPPER'\n", "is not host"),
        ("[[registry]\n", "not valid TOML"),
    ],
)
def test_malformed_configuration_is_a_usage_error_naming_the_place(
    etc: Path, text: str, message: str
) -> None:
    write_conf(etc, text)
    with pytest.raises(UsageError, match=message):
        load()


def test_short_names_without_search_registries_are_docker_hubs(etc: Path) -> None:
    write_conf(etc, '[aliases]\n"fedora" = "registry.fedoraproject.org/fedora"\n')
    assert load().qualify("fedora") == "fedora"  # Reference.parse makes it docker.io/library/fedora


def test_short_names_with_search_registries_need_an_alias(etc: Path) -> None:
    write_conf(
        etc,
        'unqualified-search-registries = ["quay.io", "docker.io"]\n[aliases]\n"app" = "quay.io/team/app"\n',
    )
    conf = load()
    assert conf.qualify("app:v2") == "quay.io/team/app:v2"
    assert conf.qualify("127.0.0.1:5000/x/y") == "127.0.0.1:5000/x/y"
    with pytest.raises(
        UsageError, match=r"short name .* trust does not guess: write the full name, e.g. quay.io/busybox"
    ):
        conf.qualify("busybox")


def test_explicit_file_is_read_alone(etc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_conf(etc, "[[registry]]\nlocation = 'a.example'\nblocked = true\n")
    mine = tmp_path / "mine.conf"
    mine.write_text("[[registry]]\nlocation = 'b.example'\nblocked = true\n")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(mine))
    conf = load()
    assert [entry.prefix for entry in conf.entries] == ["b.example"]
    with pytest.raises(UsageError, match="no such file"):
        load(str(tmp_path / "absent.conf"))


def test_empty_configuration_governs_nothing() -> None:
    assert not RegistriesConf().may_govern("docker.io")


# -- certs.d and --cert-dir: real TLS registries ----------------------------------------------------


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[tuple[Registry, TestCA]]:
    ca = TestCA.create(tmp_path / "ca")
    cert, key = ca.server(tmp_path / "tls", ["127.0.0.1"])
    registry = start_registry(tmp_path / "registry", tls=(cert, key, ca.cert_path))
    try:
        yield registry, ca
    finally:
        registry.stop()


def test_a_tls_registry_is_reached_through_certs_d(
    etc: Path, tmp_path: Path, tls_registry: tuple[Registry, TestCA]
) -> None:
    registry, ca = tls_registry
    pushed = push_image(registry, "certs/app", simple_image(b"certs.d"), tag="v1")
    ref = f"{registry.host}/certs/app@{pushed.digest}"
    store = str(tmp_path / "store")
    untrusted = {"SSL_CERT_FILE": "", "SSL_CERT_DIR": ""}

    refused = trust_subprocess("pull", "--store", store, ref, env=untrusted)
    assert refused.returncode == 5, refused.stderr
    assert "certificate" in refused.stderr.lower() and "Traceback" not in refused.stderr

    for certs_d in ("etc/containers/certs.d", "etc/docker/certs.d"):
        directory = etc / certs_d / registry.host
        directory.mkdir(parents=True)
        (directory / "ca.crt").write_bytes(ca.cert_path.read_bytes())
        ok = trust_subprocess("pull", "--store", store, ref, env=untrusted)
        assert ok.returncode == 0, ok.stderr
        (directory / "ca.crt").unlink()
        directory.rmdir()
    # Never a plain-HTTP attempt, whatever the certificate outcome.
    log = registry.log_tail(200)
    assert "does not look like a TLS handshake" not in log and "HTTP request to an HTTPS" not in log


def test_a_host_s_ca_is_trusted_for_that_host_only(etc: Path, tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca")
    other = etc / "etc/containers/certs.d/127.0.0.1:1"
    other.mkdir(parents=True)
    (other / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    assert host_tls("127.0.0.1:1") is not None
    assert host_tls("127.0.0.1:2") is None
    assert host_tls("../etc") is None  # a host is one directory entry, never a path


def test_mutual_tls_with_clientcas(etc: Path, tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca")
    clients_ca = TestCA.create(tmp_path / "clients-ca", name="client CA")
    cert, key = ca.server(tmp_path / "tls", ["127.0.0.1"])
    helper_cert = clients_ca.client(tmp_path / "helper", "test helper")
    registry = start_registry(
        tmp_path / "registry",
        tls=(cert, key, ca.cert_path),
        client_ca=clients_ca.cert_path,
        client_cert=helper_cert,
    )
    try:
        pushed = push_image(registry, "mtls/app", simple_image(b"mutual"), tag="v1")
        ref = f"{registry.host}/mtls/app@{pushed.digest}"
        store = str(tmp_path / "store")
        directory = etc / "etc/containers/certs.d" / registry.host
        directory.mkdir(parents=True)
        (directory / "ca.crt").write_bytes(ca.cert_path.read_bytes())

        without = trust_subprocess("pull", "--store", store, ref)
        assert without.returncode == 5, without.stderr
        assert "Traceback" not in without.stderr

        clients_ca.client(directory, "robot")  # client.cert + client.key
        with_pair = trust_subprocess("pull", "--store", store, ref)
        assert with_pair.returncode == 0, with_pair.stderr

        (directory / "client.key").unlink()  # half a pair is a configuration error, said so
        half = trust_subprocess("pull", "--store", store, ref)
        assert half.returncode == 2 and "client.cert has no matching client.key" in half.stderr

        # skopeo's --cert-dir: one directory for the registry, instead of certs.d.
        cert_dir = tmp_path / "cert-dir"
        cert_dir.mkdir()
        (cert_dir / "ca.crt").write_bytes(ca.cert_path.read_bytes())
        clients_ca.client(cert_dir, "robot")
        by_flag = trust_subprocess("pull", "--cert-dir", str(cert_dir), "--store", store, ref)
        assert by_flag.returncode == 0, by_flag.stderr
        global_flag = trust_subprocess("--cert-dir", str(cert_dir), "pull", "--store", store, ref)
        assert global_flag.returncode == 0, global_flag.stderr
    finally:
        registry.stop()


# -- mirrors and blocked sources: real registries -------------------------------------------------


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRUST_PASSWORD", "pw")
    try:
        assert main(["keygen", "--output-prefix", str(folder / "k")]) == 0
    finally:
        mp.undo()
    return folder / "k"


def test_a_mirror_serves_a_blocked_source_by_digest(
    etc: Path,
    tmp_path: Path,
    signing_key: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = start_registry(tmp_path / "source")
    mirror = start_registry(tmp_path / "mirror")
    try:
        monkeypatch.setenv("TRUST_PASSWORD", "pw")
        pushed = push_image(source, "team/app", simple_image(b"mirrored"), tag="v1")
        source_ref = f"{source.host}/team/app@{pushed.digest}"
        assert (
            main(["sign", "--tlog-upload=false", "--key", str(signing_key.with_suffix(".key")), source_ref])
            == 0
        )
        # The mirror holds the image and its signature under another path, as `skopeo sync` leaves it.
        assert main(["copy", source_ref, f"{mirror.host}/hub/team/app:v1"]) == 0
        conf = write_conf(
            etc,
            f"""
            [[registry]]
            location = "{source.host}"
            blocked = true

            [[registry.mirror]]
            location = "{mirror.host}/hub"
            pull-from-mirror = "digest-only"
            """,
        )
        source.stop()  # nothing may reach the source any more
        store = str(tmp_path / "store")
        capsys.readouterr()

        assert main(["pull", "--store", store, "--output", "json", source_ref]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["reference"] == source_ref and record["digest"] == pushed.digest
        assert record["mirrors"] == [f"{mirror.host}/hub/team/app"]  # says who served the bytes
        assert main(["pull", "--store", str(tmp_path / "store-text"), source_ref]) == 0
        assert f"served by registries.conf mirror {mirror.host}/hub/team/app" in capsys.readouterr().err
        records = (tmp_path / "store-text").rglob("pulls*")
        assert any(f"{mirror.host}/hub/team/app" in path.read_text() for path in records if path.is_file())
        # Signatures are looked up under the source's name (served by the mirror), for its identity.
        public = str(signing_key.with_suffix(".pub"))
        assert main(["verify", "--key", public, source_ref]) == 0
        capsys.readouterr()

        # A tag is not served by a digest-only mirror, and the source is blocked: exit 3, the line.
        assert main(["pull", "--store", store, f"{source.host}/team/app:v1"]) == 3
        assert f"blocked by {conf}:4" in capsys.readouterr().err

        # The mirror's bytes are verified as the source's: a layer it corrupts is refused (exit 4).
        layer = record["layers"][0]["digest"]
        mirror.blob_path(layer).write_bytes(b"not the layer")
        assert main(["pull", "--store", str(tmp_path / "store2"), source_ref]) == 4
    finally:
        source.stop()
        mirror.stop()


def test_a_location_rewrite_and_a_short_name_alias(
    etc: Path, tmp_path: Path, registry: Registry, repo_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push_image(registry, f"real/{repo_name}", simple_image(b"rewritten"), tag="v1")
    write_conf(
        etc,
        f"""
        unqualified-search-registries = ["names.example"]
        [aliases]
        "app" = "names.example/{repo_name}"

        [[registry]]
        prefix = "names.example"
        location = "{registry.host}/real"
        """,
    )
    store = str(tmp_path / "store")
    capsys.readouterr()
    assert main(["pull", "--store", store, "app:v1"]) == 0
    assert capsys.readouterr().out.strip() == f"names.example/{repo_name}@{pushed.digest}"
    assert main(["pull", "--store", store, "other:v1"]) == 2
    assert "trust does not guess" in capsys.readouterr().err


def test_registries_conf_flag_and_environment(
    etc: Path, tmp_path: Path, registry: Registry, repo_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push_image(registry, repo_name, simple_image(b"flag"), tag="v1")
    conf = tmp_path / "blocking.conf"
    conf.write_text(f'[[registry]]\nprefix = "{registry.host}/{repo_name}"\nblocked = true\n')
    ref = f"{registry.host}/{repo_name}@{pushed.digest}"
    store = str(tmp_path / "store")
    capsys.readouterr()
    assert main(["--registries-conf", str(conf), "pull", "--store", store, ref]) == 3
    assert f"blocked by {conf}:3" in capsys.readouterr().err
    assert "CONTAINERS_REGISTRIES_CONF" not in os.environ  # restored after the command
    assert main(["pull", "--store", store, ref]) == 0
    refused = trust_subprocess("pull", "--store", store, ref, env={"CONTAINERS_REGISTRIES_CONF": str(conf)})
    assert refused.returncode == 3 and "blocked by" in refused.stderr


# -- credentials from podman's auth.json ------------------------------------------------------------


def _auth_file(path: Path, registry: str, user: str, password: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry: {"auth": token}}}))


def test_podman_auth_files_after_docker_config(
    etc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    home = Path(os.environ["HOME"])
    _auth_file(home / ".config/containers/auth.json", "r.example:5000", "home", "h")
    assert CredentialStore().lookup("r.example:5000").username == "home"  # type: ignore[union-attr]
    _auth_file(runtime / "containers/auth.json", "r.example:5000", "runtime", "r")
    assert CredentialStore().lookup("r.example:5000").username == "runtime"  # type: ignore[union-attr]
    _auth_file(home / ".docker/config.json", "r.example:5000", "docker", "d")
    assert CredentialStore().lookup("r.example:5000").username == "docker"  # type: ignore[union-attr]
    # A namespaced key belongs to that namespace, never to the whole registry.
    _auth_file(runtime / "containers/auth.json", "other.example/team", "ns", "n")
    assert CredentialStore().lookup("other.example") is None


def test_credentials_from_xdg_runtime_auth_json_reach_a_real_registry(
    etc: Path, tmp_path: Path, auth_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed = push_image(
        auth_registry, "podman/app", simple_image(b"auth.json"), tag="v1", auth=auth_registry.auth
    )
    runtime = tmp_path / "run"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    ref = f"{auth_registry.host}/podman/app@{pushed.digest}"
    assert main(["pull", "--store", str(tmp_path / "s1"), ref]) == 5
    assert auth_registry.auth is not None
    _auth_file(runtime / "containers/auth.json", auth_registry.host, *auth_registry.auth)
    assert main(["pull", "--store", str(tmp_path / "s2"), ref]) == 0
