"""A real Sigstore on 127.0.0.1 for tests: Fulcio, Rekor v2, a timestamp authority, a CT log.

The services are Sigstore's own servers, built from the Go module proxy by `scripts/peers.sh`
(pinned there), not stand-ins: what cosign writes against them is what it writes against the
public-good instance. Each runs on a loopback port with state in a folder of the test's own:

- Fulcio (`--ca=ephemeralca`: a CA made at start) trusting two OIDC issuers served here (`issuer`,
  `other_issuer`: discovery and JWKS, tokens signed with an RSA key of the test's own, a test
  identity provider), and submitting its precertificates to
- TesseraCT (`tesseract`, a static-ct-api certificate transparency log on a POSIX folder), so the
  certificates carry real embedded SCTs that cosign and trust check;
- rekor-tiles (Rekor v2 on Tessera's POSIX backend), the transparency log;
- timestamp-authority (`timestamp-server`, in-memory signer: its chain is read from the server).

`start_local_sigstore` writes the trusted root, the signing config and the `ClientTrustConfig`
(both together) that describe them, as cosign (`--trusted-root`, `--signing-config`) and trust
(`--trusted-root`, `--trust-config`) read them.

Rekor v1 (`github.com/sigstore/rekor` cmd/rekor-server) is not here: it needs Trillian's log server
and signer with MySQL, and redis; Rekor v2 is what the public instance writes to from 2025 on.

The timestamp authority (v2.1.3) serves its metrics on `:2112`, a port written in its code, so
two can't run on one machine at once: a set of services holds an exclusive lock on
`TSA_LOCK` from start to stop, and another test (another xdist worker, another checkout's run)
waits for it. Tests start the services per test (under a second) so the lock is held briefly.

As `support.registry`, every process dies with the test process (`setpriv --pdeathsig KILL`).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from support.processes import free_port, terminate, track

START_TIMEOUT = 30.0
TSA_LOCK = Path("/tmp/trust-tests-timestamp-authority-2112.lock")
"""Held while a timestamp authority of these tests runs (its metrics port is fixed: :2112)."""
LOCK_TIMEOUT = 300.0
SERVICE_NAME = "trust-tests"


class SigstoreServicesError(RuntimeError):
    """A service did not start; the message names it and ends with its log's tail."""


@dataclass(frozen=True)
class SigstoreBinaries:
    """Paths of the servers scripts/peers.sh built."""

    fulcio: str
    rekor_tiles: str
    timestamp_server: str
    tesseract: str

    @classmethod
    def from_folders(cls, folders: list[str]) -> SigstoreBinaries:
        """From peers.sh's output (one bin folder a line)."""
        found = {tool.name: str(tool) for folder in folders for tool in Path(folder).iterdir()}
        return cls(found["fulcio"], found["rekor-tiles"], found["timestamp-server"], found["tesseract"])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OIDCIssuer:
    """A minimal OpenID Connect issuer: discovery and JWKS over HTTP, tokens minted in-process.

    Fulcio fetches `/.well-known/openid-configuration` and the JWKS it names, and checks the
    token's RS256 signature, `iss`, `aud` (`sigstore`), expiry, and for an e-mail issuer the
    `email` and `email_verified` claims; the e-mail becomes the certificate's SAN."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = hashlib.sha256(
            self._key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()[:16]
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = issuer._discovery()
                elif self.path == "/jwks":
                    body = issuer._jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks",
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()

        def integer(value: int) -> str:
            return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self._kid}
        return {"keys": [{**key, "n": integer(numbers.n), "e": integer(numbers.e)}]}

    def token(self, email: str, *, audience: str = "sigstore", lifetime: int = 600) -> str:
        """An identity token for `email`, signed by this issuer."""
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": self._kid}
        claims = {
            "iss": self.url,
            "sub": email,
            "aud": audience,
            "email": email,
            "email_verified": True,
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class LocalSigstore:
    """The running services and the files that describe them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.trusted_root = out / "trusted_root.json"
        self.signing_config = out / "signing_config.json"
        self.trust_config = out / "trust_config.json"
        self.issuer = OIDCIssuer()
        self.other_issuer = OIDCIssuer()
        self.fulcio_url = ""
        self.rekor_url = ""
        self.tsa_url = ""
        """The timestamp endpoint itself (`…/api/v1/timestamp`)."""
        self.ct_url = ""
        self._processes: list[subprocess.Popen[bytes]] = []
        self._lock: int | None = None

    def stop(self) -> None:
        for process in self._processes:
            terminate(process)
        self.issuer.stop()
        self.other_issuer.stop()
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _take_tsa_port(self) -> None:
        self._lock = os.open(TSA_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SigstoreServicesError(
                        f"another timestamp authority held {TSA_LOCK} for {LOCK_TIMEOUT:.0f} s"
                    ) from None
                time.sleep(0.1)

    def __enter__(self) -> LocalSigstore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self, name: str, command: list[str], ready: Callable[[], bool]) -> subprocess.Popen[bytes]:
        log = self.out / f"{name}.log"
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        with open(log, "ab") as sink:
            process = subprocess.Popen(command, cwd=self.out, stdout=sink, stderr=subprocess.STDOUT)
        track(process)
        self._processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if ready():
                    return process
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise SigstoreServicesError(f"{name} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def start_local_sigstore(binaries: SigstoreBinaries, workdir: Path) -> LocalSigstore:
    """Start the four services and the two issuers; on failure, stop what started and raise."""
    workdir.mkdir(parents=True, exist_ok=True)
    sigstore = LocalSigstore(workdir)
    try:
        _start_all(sigstore, binaries)
    except BaseException:
        sigstore.stop()
        raise
    return sigstore


def _start_all(sigstore: LocalSigstore, binaries: SigstoreBinaries) -> None:
    out = sigstore.out
    start = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # The timestamp authority: an in-memory signer, whose chain the server hands out.
    sigstore._take_tsa_port()
    tsa_port = free_port()
    tsa_base = f"http://127.0.0.1:{tsa_port}"
    sigstore.tsa_url = f"{tsa_base}/api/v1/timestamp"
    chain_pem: list[bytes] = []

    def tsa_ready() -> bool:
        answer = httpx.get(f"{tsa_base}/api/v1/timestamp/certchain", timeout=2)
        if answer.status_code != 200:
            return False
        chain_pem.append(answer.content)
        return True

    sigstore._start(
        "timestamp-server",
        [
            binaries.timestamp_server,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(tsa_port),
            "--timestamp-signer",
            "memory",
            "--disable-ntp-monitoring",
            "--log-type",
            "prod",
        ],
        tsa_ready,
    )
    tsa_chain = x509.load_pem_x509_certificates(chain_pem[0])

    # Rekor v2 on a folder. Its checkpoints name the log by --hostname; sigstore-go expects the
    # host of the trusted root's baseUrl there.
    rekor_key = ec.generate_private_key(ec.SECP256R1())
    (out / "rekor-key.pem").write_bytes(
        rekor_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    rekor_port, rekor_grpc, rekor_metrics = free_port(), free_port(), free_port()
    sigstore.rekor_url = f"http://127.0.0.1:{rekor_port}"
    sigstore._start(
        "rekor-tiles",
        [
            binaries.rekor_tiles,
            "serve",
            "--http-address",
            "127.0.0.1",
            "--http-port",
            str(rekor_port),
            "--grpc-address",
            "127.0.0.1",
            "--grpc-port",
            str(rekor_grpc),
            "--http-metrics-port",
            str(rekor_metrics),
            "--hostname",
            "127.0.0.1",
            "--storage-dir",
            str(out / "rekor"),
            "--signer-filepath",
            str(out / "rekor-key.pem"),
            # an entry is answered once a checkpoint covers it: publish often
            "--checkpoint-interval",
            "200ms",
            "--batch-max-age",
            "50ms",
        ],
        lambda: httpx.get(f"{sigstore.rekor_url}/healthz", timeout=2).status_code == 200,
    )

    # Fulcio first (the CT log must be told its root), pointed at the CT log's port.
    ct_port = free_port()
    sigstore.ct_url = f"http://127.0.0.1:{ct_port}"
    issuers = {
        issuer.url: {"IssuerURL": issuer.url, "ClientID": "sigstore", "Type": "email"}
        for issuer in (sigstore.issuer, sigstore.other_issuer)
    }
    (out / "fulcio.json").write_text(json.dumps({"OIDCIssuers": issuers}))
    fulcio_port, fulcio_grpc, fulcio_metrics = free_port(), free_port(), free_port()
    sigstore.fulcio_url = f"http://127.0.0.1:{fulcio_port}"
    bundle: list[dict[str, Any]] = []

    def fulcio_ready() -> bool:
        answer = httpx.get(f"{sigstore.fulcio_url}/api/v2/trustBundle", timeout=2)
        if answer.status_code != 200:
            return False
        bundle.append(answer.json())
        return True

    sigstore._start(
        "fulcio",
        [
            binaries.fulcio,
            "serve",
            "--ca",
            "ephemeralca",
            "--config-path",
            str(out / "fulcio.json"),
            # HTTP and gRPC on two ports (one port, Fulcio's duplex mode, panics registering its
            # metrics twice in v1.8.8); the legacy socket's default is one abstract name per machine
            "--host",
            "127.0.0.1",
            "--port",
            str(fulcio_port),
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            str(fulcio_grpc),
            "--metrics-port",
            str(fulcio_metrics),
            "--legacy-unix-domain-socket",
            str(out / "fulcio-legacy.sock"),
            "--ct-log-url",
            sigstore.ct_url,
            "--log_type",
            "prod",
        ],
        fulcio_ready,
    )
    ca_chain = [
        x509.load_pem_x509_certificate(pem.encode()) for pem in bundle[0]["chains"][0]["certificates"]
    ]
    (out / "fulcio-roots.pem").write_bytes(ca_chain[-1].public_bytes(serialization.Encoding.PEM))

    ct_key = ec.generate_private_key(ec.SECP256R1())
    (out / "ct-key.pem").write_bytes(
        ct_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    sigstore._start(
        "tesseract",
        [
            binaries.tesseract,
            f"--http_endpoint=127.0.0.1:{ct_port}",
            "--origin=127.0.0.1",
            f"--roots_pem_file={out / 'fulcio-roots.pem'}",
            f"--storage_dir={out / 'ct'}",
            f"--private_key={out / 'ct-key.pem'}",
            "--checkpoint_interval=200ms",
            "--batch_max_age=50ms",
            "--accept_sha1_signing_algorithms=false",
        ],
        lambda: httpx.get(f"{sigstore.ct_url}/ct/v1/get-roots", timeout=2).status_code == 200,
    )

    def der(cert: x509.Certificate) -> str:
        return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def log(url: str, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": base64.b64encode(public).decode(),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": start},
            },
            "logId": {"keyId": base64.b64encode(hashlib.sha256(public).digest()).decode()},
        }

    root = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [log(sigstore.rekor_url, rekor_key)],
        "certificateAuthorities": [
            {
                "subject": {"organization": SERVICE_NAME, "commonName": "fulcio"},
                "uri": sigstore.fulcio_url,
                "certChain": {"certificates": [{"rawBytes": der(cert)} for cert in ca_chain]},
                "validFor": {"start": start},
            }
        ],
        "ctlogs": [log(sigstore.ct_url, ct_key)],
        "timestampAuthorities": [
            {
                "subject": {"organization": SERVICE_NAME, "commonName": "timestamp-authority"},
                "uri": sigstore.tsa_url,
                "certChain": {"certificates": [{"rawBytes": der(cert)} for cert in tsa_chain]},
                "validFor": {"start": start},
            }
        ],
    }

    def service(url: str, version: int) -> dict[str, Any]:
        return {
            "url": url,
            "majorApiVersion": version,
            "validFor": {"start": start},
            "operator": SERVICE_NAME,
        }

    signing = {
        "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
        "caUrls": [service(sigstore.fulcio_url, 1)],
        "oidcUrls": [service(sigstore.issuer.url, 1)],
        "rekorTlogUrls": [service(sigstore.rekor_url, 2)],
        "tsaUrls": [service(sigstore.tsa_url, 1)],
        "rekorTlogConfig": {"selector": "ANY"},
        "tsaConfig": {"selector": "ANY"},
    }
    sigstore.trusted_root.write_text(json.dumps(root, indent=1))
    sigstore.signing_config.write_text(json.dumps(signing, indent=1))
    sigstore.trust_config.write_text(
        json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
                "trustedRoot": root,
                "signingConfig": signing,
            },
            indent=1,
        )
    )


__all__ = [
    "LocalSigstore",
    "OIDCIssuer",
    "SigstoreBinaries",
    "SigstoreServicesError",
    "start_local_sigstore",
]
