"""Per-registry TLS, where podman and docker users already keep it: `certs.d/HOST[:PORT]/`.

    /etc/containers/certs.d/registry.example:5000/ca.crt        a CA trusted for that host only
    /etc/containers/certs.d/registry.example:5000/client.cert   with client.key: mutual TLS
    /etc/docker/certs.d/registry.example:5000/…                 the same layout, read after

The directories searched, first match wins (as containers/image does): `$HOME/.config/containers/
certs.d` (not as root), `/etc/containers/certs.d`, `/etc/docker/certs.d`. `--cert-dir DIR` (or
`TRUST_CERT_DIR`) replaces the search with one directory used for every registry, as skopeo's
`--cert-dir` does. `TRUST_CONFIG_ROOT` prefixes the `/etc` paths (tests, chroots).

Trust is added, never replaced: a host's `*.crt` files join the system roots (OpenSSL's default
paths, so `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured), they do not make other CAs untrusted
and they are used for that host only. Every `NAME.cert` needs its `NAME.key` (and the reverse).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from pull.errors import UsageError
from pull.records import dataclass

CONFIG_ROOT_ENV = "TRUST_CONFIG_ROOT"
"""Prefix for the system configuration paths (`/etc/containers`, `/etc/docker`); empty by default."""
CERT_DIR_ENV = "TRUST_CERT_DIR"


def system_path(path: str) -> Path:
    """`path` (absolute, under /etc) below `TRUST_CONFIG_ROOT` when that is set."""
    root = os.environ.get(CONFIG_ROOT_ENV, "")
    return Path(root + path) if root else Path(path)


def certs_d_roots() -> tuple[Path, ...]:
    """The certs.d directories searched for a host's directory, in order."""
    roots: list[Path] = []
    if os.geteuid() != 0:
        roots.append(Path.home() / ".config" / "containers" / "certs.d")
    roots.append(system_path("/etc/containers/certs.d"))
    roots.append(system_path("/etc/docker/certs.d"))
    return tuple(roots)


@dataclass(frozen=True)
class HostTLS:
    """What a certs.d directory holds for one host: extra CAs and an optional client pair."""

    directory: Path
    ca_files: tuple[Path, ...]
    client_pair: tuple[Path, Path] | None


def host_tls(host: str, cert_dir: str | None = None) -> HostTLS | None:
    """The TLS material for `host` (as in a reference: `name[:port]`), or None if there is none.

    Raises:
        UsageError: a `.cert` without its `.key` (or the reverse), or an unreadable directory.
    """
    cert_dir = cert_dir or os.environ.get(CERT_DIR_ENV) or None
    if cert_dir is not None:
        directory = Path(cert_dir)
        if not directory.is_dir():
            raise UsageError(f"--cert-dir {cert_dir}: not a directory")
        return _read_directory(directory)
    if "/" in host or host in ("", ".", ".."):
        return None  # never a path: a host name is a single directory entry
    # Docker Hub's API host is written `docker.io` in references, and so in certs.d.
    names = (host, "docker.io") if host == "registry-1.docker.io" else (host,)
    for root in certs_d_roots():
        for name in names:
            directory = root / name
            if directory.is_dir():
                return _read_directory(directory)
    return None


def _read_directory(directory: Path) -> HostTLS:
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except OSError as exc:
        raise UsageError(f"cannot read TLS directory {directory}: {exc.strerror}") from None
    cas = tuple(directory / name for name in names if name.endswith(".crt"))
    certs = {name[: -len(".cert")] for name in names if name.endswith(".cert")}
    keys = {name[: -len(".key")] for name in names if name.endswith(".key")}
    for stem in sorted(certs ^ keys):
        missing = f"{stem}.key" if stem in certs else f"{stem}.cert"
        present = f"{stem}.cert" if stem in certs else f"{stem}.key"
        raise UsageError(f"{directory / present} has no matching {missing}: a client pair needs both")
    pairs = sorted(certs)
    if len(pairs) > 1:
        raise UsageError(f"{directory} holds {len(pairs)} client certificates; keep one .cert/.key pair")
    pair = (directory / f"{pairs[0]}.cert", directory / f"{pairs[0]}.key") if pairs else None
    return HostTLS(directory, cas, pair)


def system_context() -> ssl.SSLContext:
    """A client context trusting the system roots (OpenSSL's default paths, which read
    `SSL_CERT_FILE` and `SSL_CERT_DIR`); certifi's bundle only where the system has no roots."""
    context = ssl.create_default_context()
    no_env = not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"))
    if no_env and context.cert_store_stats()["x509_ca"] == 0 and not _has_hashed_dir():
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    return context


def _has_hashed_dir() -> bool:
    directory = ssl.get_default_verify_paths().capath
    return bool(directory) and any(name.endswith(".0") for name in _listdir(directory))


def _listdir(directory: str | None) -> list[str]:
    try:
        return os.listdir(directory or "")
    except OSError:
        return []


def context_for(tls: HostTLS, ca_bundle: str | None = None) -> ssl.SSLContext:
    """The system roots (or `ca_bundle`), plus `tls`'s CAs and client pair.

    Raises:
        UsageError: a CA, certificate or key in the directory cannot be loaded.
    """
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else system_context()
    for ca_file in tls.ca_files:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load CA {ca_file}: {_reason(exc)}") from None
    if tls.client_pair is not None:
        cert, key = tls.client_pair
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"cannot load client certificate {cert} with {key.name}: {_reason(exc)}"
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200]
