"""Start the real CNCF distribution registry (`docker-registry serve`) on 127.0.0.1 for tests.

    registry = start_registry(tmp_path / "reg")                    # anonymous, delete enabled
    registry.host                                                  # "127.0.0.1:41234"
    registry.reference("team/app", "v1")                           # "127.0.0.1:41234/team/app:v1"
    secured = start_registry(tmp_path / "auth", credentials=("alice", "pw"))   # htpasswd Basic auth
    with secured.client() as http:                                 # httpx.Client, base_url + auth set
        assert http.get("/v2/").status_code == 200
    registry.stop()                                                # or use it as a context manager

Each registry gets its own working directory: `config.yml`, `storage/` (filesystem driver),
`registry.log` (its stderr and stdout) and, with credentials, a bcrypt `htpasswd` file.

The port is chosen by the registry itself (`http.addr: 127.0.0.1:0`) and read back from its
"listening on" log line, so two registries (or two pytest-xdist workers) never race for a port.
Start-up waits, bounded by `timeout`, until `GET /v2/` answers; on failure `RegistryStartError`
carries the tail of the registry's log.

A started registry is stopped by `stop()`, by an `atexit` hook (for interrupted runs) and, on
Linux, by the kernel when the Python process that started it dies (`setpriv --pdeathsig KILL`),
so no registry outlives the test run even if pytest itself is killed.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import bcrypt
import httpx
import yaml

REGISTRY_BINARY = "docker-registry"
DEFAULT_START_TIMEOUT = 20.0
"""Seconds to wait for a registry to listen and answer `GET /v2/` before giving up."""
REALM = "trust-tests"

_LISTENING = re.compile(r"listening on (127\.0\.0\.1:\d+)")
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
"""Registries started by this process and not yet stopped, by pid (for the atexit hook)."""


RegistryFactory = Callable[..., "Registry"]
"""The `fresh_registry` fixture's type: `fresh_registry(credentials=None) -> Registry`."""


class RegistryStartError(RuntimeError):
    """The registry did not start, or did not answer `GET /v2/` in time. The message has its log tail."""


class Registry:
    """A running `docker-registry` on loopback. Create with `start_registry`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        host: str,
        workdir: Path,
        credentials: tuple[str, str] | None,
        ca_cert: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
    ) -> None:
        self._process = process
        self.host = host
        """`127.0.0.1:<port>`: what image references and the product's client take."""
        self.ca_cert = ca_cert
        """With TLS: the CA that issued the registry's certificate (None: plain HTTP)."""
        self.client_cert = client_cert
        """With mutual TLS: the (certificate, key) this helper presents to the registry."""
        self.url = f"{'https' if ca_cert else 'http'}://{host}"
        self.workdir = workdir
        self.storage_dir = workdir / "storage"
        """Root of the filesystem storage driver (`docker/registry/v2/...` below it)."""
        self.log_path = workdir / "registry.log"
        self.username = credentials[0] if credentials else None
        self.password = credentials[1] if credentials else None

    # -- convenience ------------------------------------------------------------------------------

    @property
    def auth(self) -> tuple[str, str] | None:
        """`(username, password)` for an htpasswd registry, `None` for an anonymous one."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def reference(self, repository: str, tag_or_digest: str | None = None) -> str:
        """`host/repo`, `host/repo:tag` or `host/repo@sha256:…` (a digest is recognised by its colon)."""
        if tag_or_digest is None:
            return f"{self.host}/{repository}"
        separator = "@" if ":" in tag_or_digest else ":"
        return f"{self.host}/{repository}{separator}{tag_or_digest}"

    def client(self, *, authenticated: bool = True, timeout: float = 30.0) -> httpx.Client:
        """A plain httpx client for this registry: `base_url` set, Basic auth if it has credentials.

        `trust_env=False` keeps proxy variables from the environment away from loopback traffic.
        """
        auth = httpx.BasicAuth(*self.auth) if authenticated and self.auth else None
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.ca_cert)) if self.ca_cert else True
        )
        if isinstance(verify, ssl.SSLContext) and self.client_cert is not None:
            verify.load_cert_chain(*map(str, self.client_cert))
        return httpx.Client(base_url=self.url, auth=auth, timeout=timeout, trust_env=False, verify=verify)

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes: overwrite it to make the registry lie."""
        algorithm, _, hexpart = digest.partition(":")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexpart):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.storage_dir / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the registry's log (stderr and stdout), for failure messages."""
        return _tail(self.log_path, lines)

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the registry (SIGTERM, then SIGKILL after `timeout`) and reap it. Idempotent."""
        _terminate(self._process, timeout)

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        auth = ", htpasswd" if self.auth else ""
        return f"<Registry {self.host} pid={self.pid} {state}{auth}>"


def start_registry(
    workdir: Path,
    *,
    credentials: tuple[str, str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    tls: tuple[Path, Path, Path] | None = None,
    client_ca: Path | None = None,
    client_cert: tuple[Path, Path] | None = None,
    foreign_urls: str | None = None,
) -> Registry:
    """Start `docker-registry serve` in `workdir` (created) and wait until it answers `GET /v2/`.

    With `credentials=(username, password)` the registry requires htpasswd Basic auth; with
    `tls=(certificate, key, issuing CA)` it speaks HTTPS only; with `client_ca` too it requires a
    client certificate issued by that CA (distribution's `clientcas`), and this helper presents
    `client_cert=(certificate, key)`. `foreign_urls` (a regexp) lets manifests list non-distributable
    layers with matching `urls` that the registry does not hold (`validation.manifests.urls.allow`).

    Raises:
        RegistryStartError: the binary is missing, the process exited, or it did not answer in time.
    """
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise RegistryStartError(
            f"{REGISTRY_BINARY!r} not found on PATH: install the Debian package docker-registry "
            "(scripts/setup.sh does)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    config_path = workdir / "config.yml"
    log_path = workdir / "registry.log"
    htpasswd = None
    if credentials is not None:
        htpasswd = workdir / "htpasswd"
        write_htpasswd(htpasswd, *credentials)
    config = _config(storage, htpasswd)
    if tls is not None:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}  # type: ignore[index]
        if client_ca is not None:
            config["http"]["tls"]["clientcas"] = [str(client_ca)]  # type: ignore[index]
    if foreign_urls is not None:
        config["validation"] = {"manifests": {"urls": {"allow": [foreign_urls]}}}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    command = [binary, "serve", str(config_path)]
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        # The kernel kills the registry if this process dies without tearing down (SIGKILL, crash).
        command = [setpriv, "--pdeathsig", "KILL", "--", *command]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=_environment(),
        )
    _LIVE[process.pid] = process
    try:
        host = _wait_for_port(process, log_path, timeout)
        registry = Registry(process, host, workdir, credentials, tls[2] if tls else None, client_cert)
        _wait_for_api(registry, time.monotonic() + timeout)
    except BaseException:
        _terminate(process, 5.0)
        raise
    return registry


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """Write an Apache htpasswd file with one bcrypt entry (the only scheme distribution accepts)."""
    if ":" in username:
        raise ValueError("an htpasswd username cannot contain ':'")
    # Cost 4 (the minimum) keeps every authenticated request cheap; strength is irrelevant here.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{username}:{hashed}\n")
    path.chmod(0o600)


# -- internals ------------------------------------------------------------------------------------


def _config(storage: Path, htpasswd: Path | None) -> dict[str, object]:
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            # No background goroutine deleting "stale" uploads while a slow test is mid-push.
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": "127.0.0.1:0", "secret": secrets.token_hex(16)},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": REALM, "path": str(htpasswd)}}
    return config


def _environment() -> dict[str, str]:
    """The environment without `REGISTRY_*` variables, which would override the config file."""
    return {key: value for key, value in os.environ.items() if not key.startswith("REGISTRY_")}


def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise RegistryStartError(
                f"docker-registry exited with status {process.returncode} before listening; "
                f"log tail:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise RegistryStartError(
                f"docker-registry did not report a listening address within {timeout:.0f}s; "
                f"log tail:\n{_tail(log_path)}"
            )
        time.sleep(0.02)


def _wait_for_api(registry: Registry, deadline: float) -> None:
    """Poll `GET /v2/` until it answers 200 (anonymous) or 401 (htpasswd), then check the credentials."""
    expected = 401 if registry.auth else 200
    last = "no answer"
    with registry.client(authenticated=False, timeout=2.0) as http:
        while True:
            try:
                status = http.get("/v2/").status_code
                if status == expected:
                    break
                last = f"HTTP {status}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if not registry.running:
                raise RegistryStartError(
                    f"docker-registry on {registry.host} exited while starting; "
                    f"log tail:\n{registry.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RegistryStartError(
                    f"GET {registry.url}/v2/ did not answer {expected} in time (last: {last}); "
                    f"log tail:\n{registry.log_tail()}"
                )
            time.sleep(0.02)
    if registry.auth:
        with registry.client() as http:
            status = http.get("/v2/").status_code
        if status != 200:
            raise RegistryStartError(
                f"htpasswd registry {registry.host} refused the generated credentials (HTTP {status}); "
                f"log tail:\n{registry.log_tail()}"
            )


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _LIVE.pop(process.pid, None)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


@atexit.register
def _stop_all() -> None:
    for process in list(_LIVE.values()):
        _terminate(process, 2.0)
