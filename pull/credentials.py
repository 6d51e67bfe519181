"""Registry credentials from Docker's `config.json` and Docker credential helpers.

Where Docker looks, we look, in Docker's order:

    $DOCKER_CONFIG/config.json, else ~/.docker/config.json
        credHelpers: {"registry.example": "ecr-login"}   -> run `docker-credential-ecr-login get`
        credsStore:  "pass"                               -> run `docker-credential-pass get`
        auths:       {"registry.example": {"auth": base64("user:password")}}
                     (or "username"/"password" fields, or "identitytoken")
    $REGISTRY_AUTH_FILE (containers-auth.json, same format), consulted after Docker's file
    ${XDG_RUNTIME_DIR}/containers/auth.json (podman's default; /run/containers/0/auth.json as
        root without XDG_RUNTIME_DIR), then $HOME/.config/containers/auth.json

Docker's file keeps priority where two files name the same registry, because `trust login`
writes there. Keys of podman's files that name a namespace (`quay.io/team`) are skipped: their
credentials belong to that namespace only, and a lookup here is by registry.

Keys of `auths` and `credHelpers` may be written `host`, `host:port`, `https://host/v1/` or
`http://host`; they are compared by host[:port]. Docker Hub goes by many names (docker.io,
index.docker.io, registry-1.docker.io) and is stored under `https://index.docker.io/v1/`, as Docker does.

A credential helper is a program speaking Docker's protocol: the action (`get`, `store`, `erase`) as its
argument, the server URL (or a JSON credential for `store`) on stdin, JSON on stdout.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pull.errors import HOST_FAULT_ERRNOS, AuthError, HostFault, UsageError
from pull.records import dataclass, field

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
"""The `auths` key and helper server URL Docker uses for Docker Hub."""

_DOCKER_HUB_NAMES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HELPER_TIMEOUT = 30.0
_TOKEN_USERNAME = "<token>"
"""What helpers and `auths` put in the username when the secret is an identity (refresh) token."""


@dataclass(frozen=True)
class Credential:
    """A username and password, or an identity token (an OAuth2 refresh token). Secrets never print."""

    username: str
    password: str = field(default="", repr=False)
    identity_token: str | None = field(default=None, repr=False)


class CredentialStore:
    """Looks up and stores registry credentials the way the Docker CLI does.

    `config_path` is Docker's `config.json` (default: from `DOCKER_CONFIG`, else `~/.docker/config.json`);
    `extra_auth_files` are read-only files in the same format consulted afterwards (default:
    `REGISTRY_AUTH_FILE` when set). Files are read on every lookup, so a `trust login` is seen at once.
    """

    def __init__(
        self,
        config_path: Path | None = None,
        *,
        extra_auth_files: tuple[Path, ...] | None = None,
        helper_timeout: float = _HELPER_TIMEOUT,
    ) -> None:
        self.config_path = config_path if config_path is not None else default_config_path()
        if extra_auth_files is None:
            extra_auth_files = default_auth_files()
        self.extra_auth_files = extra_auth_files
        self.helper_timeout = helper_timeout
        self._fixed: dict[str, Credential] | None = None

    @classmethod
    def fixed(cls, registry: str, credential: Credential) -> CredentialStore:
        """A store that knows only `credential` for `registry` and reads no file or helper.

        `trust login` checks a new password with it before saving anything.
        """
        store = cls(Path(os.devnull), extra_auth_files=())
        store._fixed = {_normalise(registry): credential}
        return store

    def lookup(self, registry: str) -> Credential | None:
        """Credentials for `registry` (a host[:port] such as `Reference.api_host`), or None.

        Raises:
            UsageError: a config file is unreadable or malformed.
            AuthError: a configured credential helper is missing, failed or timed out.
        """
        if self._fixed is not None:
            return self._fixed.get(_normalise(registry))
        for path in (self.config_path, *self.extra_auth_files):
            document = _read_config(path)
            helper = _helper_for(document, registry, path)
            if helper is not None:
                found = self._helper_get(helper, registry, path)
                if found is not None:
                    return found
            found = _from_auths(document, registry, path)
            if found is not None:
                return found
        return None

    def store_login(self, registry: str, username: str, password: str) -> None:
        """Remember a login for `registry`: in its credential helper if one is configured, else in `auths`.

        The config file is rewritten atomically (temp file, fsync, rename) with mode 0600.
        """
        self._refuse_if_fixed()
        if not username or ":" in username:
            raise UsageError("username must be non-empty and must not contain ':'")
        document = _read_config(self.config_path)
        helper = _helper_for(document, registry, self.config_path)
        if helper is not None:
            secret = json.dumps({"ServerURL": server_key(registry), "Username": username, "Secret": password})
            self._run_helper(helper, "store", secret, registry, self.config_path)
            return
        auths = _auths_section(document, self.config_path)
        for key in [key for key in auths if _same_registry(key, registry)]:
            del auths[key]  # drop aliases such as "https://host/v1/" so no stale entry survives
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        auths[server_key(registry)] = {"auth": token}
        _write_config(self.config_path, document)

    def remove_login(self, registry: str) -> bool:
        """Forget any login for `registry` (helper and `auths`). Returns whether one was found."""
        self._refuse_if_fixed()
        document = _read_config(self.config_path)
        removed = False
        helper = _helper_for(document, registry, self.config_path)
        if helper is not None:
            erased = self._run_helper(helper, "erase", server_key(registry), registry, self.config_path)
            removed = erased is not None
        auths = document.get("auths")
        if isinstance(auths, dict):
            keys = [key for key in auths if _same_registry(key, registry)]
            for key in keys:
                del auths[key]
            if keys:
                _write_config(self.config_path, document)
                removed = True
        return removed

    def _refuse_if_fixed(self) -> None:
        if self._fixed is not None:
            raise RuntimeError("a CredentialStore.fixed() store cannot save or remove logins")

    def _helper_get(self, helper: str, registry: str, path: Path) -> Credential | None:
        result = self._run_helper(helper, "get", server_key(registry), registry, path)
        if result is None:
            return None
        try:
            answer = json.loads(result.stdout)
            username, secret = answer["Username"], answer["Secret"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise AuthError(
                f"credential helper docker-credential-{helper} returned malformed output for {registry}"
            ) from None
        if not isinstance(username, str) or not isinstance(secret, str) or not secret:
            return None
        if username == _TOKEN_USERNAME:
            return Credential(username="", identity_token=secret)
        return Credential(username=username, password=secret)

    def _run_helper(
        self, helper: str, action: str, stdin: str, registry: str, path: Path
    ) -> subprocess.CompletedProcess[str] | None:
        """Run `docker-credential-<helper> <action>`; None when it says it has no such credentials."""
        program = f"docker-credential-{helper}"
        executable = shutil.which(program)
        if executable is None:
            raise AuthError(
                f"credential helper {program} (configured in {path}) for {registry} was not found on PATH"
            )
        try:
            result = subprocess.run(
                [executable, action],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.helper_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AuthError(
                f"credential helper {program} did not answer within {self.helper_timeout:g}s for {registry}"
            ) from None
        except OSError as exc:
            raise AuthError(f"cannot run credential helper {program} for {registry}: {exc}") from None
        if result.returncode == 0:
            return result
        # Helpers report a missing entry on stdout ("credentials not found in native keychain").
        if "credentials not found" in (result.stdout + result.stderr).lower():
            return None
        raise AuthError(
            f"credential helper {program} failed to {action} credentials for {registry}: "
            f"{_first_line(result.stderr or result.stdout)}"
        )


def default_config_path() -> Path:
    """Docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def default_auth_files() -> tuple[Path, ...]:
    """The containers-auth.json files read after Docker's config, in order (module docstring)."""
    files: list[Path] = []
    auth_file = os.environ.get("REGISTRY_AUTH_FILE")
    if auth_file:
        files.append(Path(auth_file))
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        files.append(Path(runtime_dir) / "containers" / "auth.json")
    elif os.geteuid() == 0:
        files.append(Path("/run/containers/0/auth.json"))
    files.append(Path.home() / ".config" / "containers" / "auth.json")
    return tuple(dict.fromkeys(files))


def server_key(registry: str) -> str:
    """The key Docker stores `registry`'s credentials under (and passes to helpers)."""
    host = _normalise(registry)
    return DOCKER_HUB_KEY if host == "docker.io" else host


def _normalise(key: str) -> str:
    """`https://Host:5000/v1/` -> `host:5000`; every Docker Hub alias -> `docker.io`."""
    host = key.strip().lower()
    for scheme in ("https://", "http://"):
        if host.startswith(scheme):
            host = host[len(scheme) :]
            break
    host = host.partition("/")[0]
    return "docker.io" if host in _DOCKER_HUB_NAMES else host


def _namespaced(key: str) -> bool:
    """A containers-auth.json key for a namespace (`quay.io/team`), not a whole registry."""
    return "://" not in key and "/" in key.strip("/")


def _same_registry(key: str, registry: str) -> bool:
    return _normalise(key) == _normalise(registry)


def _read_config(path: Path) -> dict[str, Any]:
    """The parsed config file, or an empty one if it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read credentials file {path}: {exc}") from None
    if not text.strip():
        return {}
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"credentials file {path} is not valid JSON: {exc}") from None
    except RecursionError:  # a few hundred kB of '[' is deeper than json's recursion limit
        raise UsageError(f"credentials file {path} is nested too deeply to be a Docker config") from None
    if not isinstance(document, dict):
        raise UsageError(f"credentials file {path} must contain a JSON object")
    return document


def _auths_section(document: dict[str, Any], path: Path) -> dict[str, Any]:
    auths = document.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise UsageError(f"credentials file {path}: 'auths' must be an object")
    return auths


def _helper_for(document: Mapping[str, Any], registry: str, path: Path) -> str | None:
    """The credential helper name configured for `registry` (credHelpers first, then credsStore)."""
    helper: object = None
    helpers = document.get("credHelpers")
    if isinstance(helpers, dict):
        helper = next((name for key, name in helpers.items() if _same_registry(key, registry)), None)
    if helper is None:
        helper = document.get("credsStore")
    if helper is None or helper == "":
        return None
    # The name becomes part of a program name: refuse paths and options.
    if not isinstance(helper, str) or not _HELPER_NAME.fullmatch(helper):
        raise UsageError(f"credentials file {path}: invalid credential helper name {str(helper)[:60]!r}")
    return helper


def _from_auths(document: Mapping[str, Any], registry: str, path: Path) -> Credential | None:
    auths = document.get("auths")
    if not isinstance(auths, dict):
        return None
    # Prefer an exact key, then any alias of the same host.
    entry = auths.get(server_key(registry))
    if entry is None:
        entry = next(
            (value for key, value in auths.items() if _same_registry(key, registry) and not _namespaced(key)),
            None,
        )
    if not isinstance(entry, dict):
        return None
    username, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(f"credentials file {path}: 'auth' for {registry} is not valid base64") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise UsageError(f"credentials file {path}: 'auth' for {registry} is not 'user:password'")
    identity_token = entry.get("identitytoken")
    if isinstance(identity_token, str) and identity_token:
        return Credential(
            username=username if isinstance(username, str) else "", identity_token=identity_token
        )
    if isinstance(username, str) and username and isinstance(password, str):
        return Credential(username=username, password=password)
    return None


def _write_config(path: Path, document: Mapping[str, Any]) -> None:
    """Replace `path` atomically with `document`, readable by its owner only.

    Raises:
        HostFault: the disk is full, the file system read-only, … (exit 5; the old file is kept).
    """
    try:
        _replace_config(path, document)
    except OSError as exc:
        if exc.errno not in HOST_FAULT_ERRNOS:
            raise
        raise HostFault(f"cannot save the credentials in {path}: {exc.strerror or exc}") from None


def _replace_config(path: Path, document: Mapping[str, Any]) -> None:
    if path.is_symlink():
        path = path.resolve()  # keep a symlinked config (dotfile managers) a symlink
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent="\t")
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no output"
    return line[:200]
