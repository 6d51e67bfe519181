"""Fixtures shared by every test: real registries on loopback, unique repository names, store paths.

- `registry` (session): one anonymous `docker-registry` for the whole run (per xdist worker).
  Tests share it safely by pushing to unique repositories (`repo_name`).
- `auth_registry` (session): the same with htpasswd Basic auth (`.username`, `.password`, `.auth`).
- `fresh_registry` (function): a factory, `fresh_registry(credentials=None) -> Registry`, for a test
  that needs a registry of its own (to delete, corrupt storage, stop it, count its contents).
- `sigstore_mock` (session): a local Fulcio, Rekor and timestamp authority (`support.sigstore_mock`).
- `repo_name` (function): a repository name unique to the test, e.g. `t/test-push-3f2a9c1d`.
- `tmp_store` (function): a path for a trust content store, not yet created.
- The machine's registry configuration (`/etc/containers`, `/etc/docker`: registries.conf,
  certs.d) is hidden from every test: `TRUST_CONFIG_ROOT` points at an empty directory (a test that
  wants one writes it below its own root, see tests/test_registries_conf.py).

The bridge, CNI chains and /run/trust folder a run creates are removed after it
(`support.hostnet`); what the host had before stays.

Every registry process is stopped at teardown, whatever the outcome of the test (see
`support.registry` for the safety nets when pytest itself is interrupted or killed).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import hostnet
from support.registry import Registry, RegistryFactory, start_registry
from support.sigstore_mock import SigstoreMock, start_sigstore_mock

os.environ.setdefault("TRUST_CONFIG_ROOT", tempfile.mkdtemp(prefix="trust-no-etc-"))

TEST_USERNAME = "trust-tester"
TEST_PASSWORD = "s3cret-Pa55word"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The shared anonymous registry: `.host` ("127.0.0.1:PORT"), `.url`, `.storage_dir`."""
    with start_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The shared htpasswd registry: anonymous requests get 401; `.username`/`.password` work."""
    workdir = tmp_path_factory.mktemp("auth-registry")
    with start_registry(workdir, credentials=(TEST_USERNAME, TEST_PASSWORD)) as running:
        yield running


@pytest.fixture
def fresh_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryFactory]:
    """A factory of private registries, all stopped when the test ends."""
    started: list[Registry] = []

    def start(credentials: tuple[str, str] | None = None) -> Registry:
        running = start_registry(tmp_path_factory.mktemp("fresh-registry"), credentials=credentials)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture(scope="session")
def sigstore_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SigstoreMock]:
    """An offline Sigstore (Fulcio, Rekor, TSA) on loopback: `.trust_config`, `.trusted_root`,
    `.url`, `.tsa_url`, `.token(subject)` (see `support.sigstore_mock`)."""
    with start_sigstore_mock(tmp_path_factory.mktemp("sigstore-mock")) as running:
        yield running


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test (its sanitised name plus a hash of its node id)."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "test"
    suffix = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    return f"t/{name}-{suffix}"


@pytest.fixture
def tmp_store(tmp_path: Path) -> Path:
    """Where a test's trust content store goes: `<tmp_path>/store`, not created (the store does that)."""
    return tmp_path / "store"


# -- a run without root proves little: say so, and fail unless asked not to ----------------------

NON_ROOT_OK = "TRUST_TESTS_WITHOUT_ROOT"
"""Set to 1 to let a run without root pass (it still prints what it skipped)."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.geteuid() == 0:
        return
    skipped = len(terminalreporter.stats.get("skipped", []))
    terminalreporter.write_sep(
        "!",
        f"NOT ROOT: {skipped} tests skipped, among them every breakout, runtime, unpack and fault "
        "test; this run proved little. Run as root"
        + ("." if os.environ.get(NON_ROOT_OK) == "1" else f" (or set {NON_ROOT_OK}=1 to pass anyway)."),
        red=True,
        bold=True,
    )


_HOST_NETWORK: hostnet.HostNetwork | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _HOST_NETWORK
    if not hasattr(session.config, "workerinput") and os.geteuid() == 0:  # the controller, before workers
        _HOST_NETWORK = hostnet.snapshot()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # The controller, after every worker: the bridge, CNI chains and lease folder the run added go.
    if not hasattr(session.config, "workerinput") and _HOST_NETWORK is not None:
        hostnet.restore(_HOST_NETWORK)
    # Only the controller decides (xdist workers have `workerinput`); a failing run stays failing.
    if hasattr(session.config, "workerinput") or os.geteuid() == 0 or os.environ.get(NON_ROOT_OK) == "1":
        return
    if exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
