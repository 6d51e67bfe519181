"""What every command module shares at run time: the exit-code table, the store, pull settings.

Command modules import this, never each other or `trust.cli.app` (which only assembles the app),
so the command line has no import cycle. It imports neither typer nor anything heavy: `trust run`
uses it before (and usually without) typer. Options that commands declare alike are in
`trust.cli.options`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pull.errors import (
    HOST_FAULT_ERRNOS,
    CouldNotCheck,
    DeniedError,
    HostFault,
    IntegrityError,
    TrustError,
    UsageError,
)
from run.errors import CommandNotExecutable, CommandNotFound
from trust.cli.output import note

if TYPE_CHECKING:
    from pull.config import PullConfig
    from pull.store import ContentStore
    from trust.keys.keyfiles import Signer
    from trust.sigstore.services import Instance

EXIT_CODES: list[tuple[type[TrustError], int]] = [
    (CommandNotFound, 127),  # as docker and podman: the container's command is not in the image
    (CommandNotExecutable, 126),
    (UsageError, 2),
    (DeniedError, 3),
    (IntegrityError, 4),
    (CouldNotCheck, 5),
]
"""Error class → exit code (DESIGN.md "Exit codes"). Anything not listed exits 1."""


def default_store_path() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/trust")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "trust"


_STORE_PATH_REFUSED = (",", ":", "\n")
"""Overlay mount options separate lower dirs with ':' and options with ',', and /proc/self/mountinfo
is line-based: snapshots under such a path could never be mounted, so the store is refused at once,
not after a pull and an unpack."""


def open_store(path: Path | None) -> ContentStore:
    from pull.store import ContentStore

    root = (path or default_store_path()).absolute()  # overlay needs absolute paths
    if any(character in str(root) for character in _STORE_PATH_REFUSED):
        raise UsageError(
            f"store path {str(root)!r} contains ',', ':' or a newline, which overlay mounts cannot "
            "carry; choose another --store"
        )
    return ContentStore.open(root)


def pull_config(insecure: list[str] | None, cert_dir: Path | None = None) -> PullConfig:
    from pull.config import PullConfig, with_pace

    return with_pace(
        PullConfig(
            insecure_registries=frozenset(insecure or ()), cert_dir=str(cert_dir) if cert_dir else None
        )
    )


def qualified(text: str) -> str:
    """An image reference as typed, with a short name resolved by registries.conf's aliases when it
    sets `unqualified-search-registries` (else a short name is Docker Hub's, as Docker has it).
    Qualified names and layouts are returned untouched, without reading any configuration."""
    from pull.reference import is_short_name

    if not is_short_name(text):
        return text
    from pull.registries_conf import load  # TOML and TLS: only for a short name

    return load().qualify(text)


MAX_ERROR_CHARS = 1000
"""An error line is cut here: a hostile 100 KB reference or registry message is not echoed whole."""


def write_file(path: Path, data: bytes) -> None:
    """Write an output file the user named (a bundle, a public key) through a temporary file beside
    it: never half a file. A sick host (full disk, read-only file system) is exit 5, a path that
    cannot be written (no such directory, a directory) exit 2; one line either way."""
    import tempfile

    from pull.errors import HOST_FAULT_ERRNOS, HostFault

    temporary: str | None = None
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=".trust-")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        message = f"cannot write {path}: {exc.strerror or exc}"
        raise (HostFault if exc.errno in HOST_FAULT_ERRNOS else UsageError)(message) from None


def error_line(error: BaseException) -> str:
    """`trust: error: …` for an error: one line (newlines folded), at most `MAX_ERROR_CHARS`."""
    text = " ".join(str(error).split())
    if len(text) > MAX_ERROR_CHARS:
        text = f"{text[: MAX_ERROR_CHARS - 60]}… ({len(text) - MAX_ERROR_CHARS + 60} more characters cut)"
    return f"trust: error: {text}"


def exit_code_for(error: BaseException) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return 1


def exit_status(command: Callable[[], int | None]) -> int:
    """Run a command; its exit status. A deliberate error (`TrustError`) is one line and its code
    from `EXIT_CODES`; ^C is 130; a fault of the host (a full disk, a read-only store) wherever it
    strikes is one line and exit 5, not a traceback. `TRUST_DEBUG` shows the traceback instead."""
    try:
        return command() or 0
    except TrustError as err:
        note(error_line(err))
        if os.environ.get("TRUST_DEBUG"):
            raise
        return exit_code_for(err)
    except KeyboardInterrupt:
        note("trust: interrupted")
        return 130
    except OSError as err:
        # Other OSErrors are bugs to fix where they happen.
        if err.errno not in HOST_FAULT_ERRNOS or os.environ.get("TRUST_DEBUG"):
            raise
        fault = HostFault.from_os_error(err)
        note(error_line(fault))
        return exit_code_for(fault)


def load_signer(key: str, public_key: Path | None) -> Signer:
    """The signer a --key names: a key file, a PEM, pkcs11:/awskms:/env:// or a signer URI."""
    import re

    from pull.userfile import open_regular_file
    from trust.keys.keyfiles import KeySigner, get_password, load_private_key_file, signer_from_uri
    from trust.keys.references import is_reference, signer_for

    if is_reference(key):
        if public_key is not None:
            raise UsageError(f"{key.split(':', 1)[0]}: keys carry their public key: drop --public-key")
        return signer_for(key)
    if Path(key).exists():
        return KeySigner(load_private_key_file(key, lambda: get_password(confirm=False, purpose=key)))
    if re.match(r"^[a-z][a-z0-9+]*:", key):
        if public_key is None:
            raise UsageError(f"signer URI {key} needs --public-key PEM")
        try:
            with open_regular_file(public_key) as handle:
                pem = handle.read(1024 * 1024)
        except OSError as exc:
            raise UsageError(f"cannot read public key {public_key}: {exc.strerror}") from None
        return signer_from_uri(key, pem)
    raise UsageError(f"key file {key} does not exist")


def sigstore_instance(
    trust_config: Path | None,
    fulcio_url: str | None,
    rekor_url: str | None,
    oidc_issuer: str | None,
    timestamp_url: str | None,
    trusted_root: Path | None,
) -> Instance:
    """The Sigstore instance the signing flags name (checked: URLs, files, no contradictions)."""
    from trust.sigstore.services import Instance

    for flag, url in (
        ("--fulcio-url", fulcio_url),
        ("--rekor-url", rekor_url),
        ("--oidc-issuer", oidc_issuer),
        ("--timestamp-server-url", timestamp_url),
    ):
        if url is not None and not url.startswith(("https://", "http://")):
            raise UsageError(f"{flag} {url[:100]!r} is not an http(s) URL")
    for flag, path in (("--trust-config", trust_config), ("--trusted-root", trusted_root)):
        if path is not None and not path.is_file():
            raise UsageError(f"{flag} {path} is not a file")
    if trust_config is not None and trusted_root is not None:
        raise UsageError("--trust-config holds a trusted root: give it or --trusted-root, not both")
    return Instance(trust_config, fulcio_url, rekor_url, oidc_issuer, timestamp_url, trusted_root)


def tlog_upload_flag(text: str) -> bool:
    """`--tlog-upload`'s value (cosign writes `--tlog-upload=false`)."""
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise UsageError(f"--tlog-upload takes true or false, not {text[:20]!r}")
    return value in ("true", "1")
