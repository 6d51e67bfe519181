"""A certificate authority, a CRL server, an OCSP responder and an RFC 3161 TSA, all real `openssl`.

    ca = OpenSSLCA(tmp_path / "ca", "Test Root")              # `openssl req -x509`, EC P-256
    server = ContentServer.start()                            # HTTP on 127.0.0.1, port chosen by the kernel
    responder = OcspResponder.start(ca)                       # `openssl ocsp -index ... -port P`
    leaf = ca.issue("signer", crl_url=server.url("/ca.crl"), ocsp_url=responder.url)
    ca.revoke(leaf)                                           # `openssl ca -revoke`
    server.files["/ca.crl"] = ca.crl()                        # `openssl ca -gencrl`, DER
    tsa = OpenSSLTimestampAuthority(tmp_path / "tsa")         # `openssl ts -reply` behind server.tsa(...)

Everything is a subprocess of the test process (an `openssl ocsp` responder is stopped by `stop()`,
an atexit hook and `--pdeathsig`), every port is on 127.0.0.1, nothing reaches the internet.
"""

from __future__ import annotations

import atexit
import http.server
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _run(*args: str | Path, cwd: Path | None = None, data: bytes | None = None) -> bytes:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, input=data, capture_output=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))[:200]} failed: {result.stderr.decode()[-800:]}")
    return result.stdout


def _openssl_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


_CA_CONFIG = """\
[ ca ]
default_ca = local
[ local ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_crl_hours = {crl_hours}
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
organizationName = optional
[ root ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ crl_ext ]
authorityKeyIdentifier = keyid:always
"""

_LEAF_SECTION = """\
[ leaf ]
basicConstraints = CA:false
keyUsage = critical, {key_usage}
extendedKeyUsage = {eku}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{extra}
"""


class OpenSSLCA:
    """A root CA in `directory` run with `openssl ca` (index.txt, serial, issued certificates)."""

    def __init__(self, directory: Path, name: str, *, crl_hours: int = 24) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "issued").mkdir(exist_ok=True)
        (directory / "index.txt").write_text("")
        (directory / "serial").write_text("1000\n")
        (directory / "crlnumber").write_text("1000\n")
        self.config = directory / "ca.cnf"
        self.config.write_text(_CA_CONFIG.format(dir=directory, crl_hours=crl_hours))
        self.key = directory / "ca.key"
        self.certificate_path = directory / "ca.pem"
        _run(
            "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", self.key
        )
        # Self-signed through `openssl ca -selfsign`, which (unlike `req -x509` in OpenSSL 3.0) takes
        # a start date: the root is valid from 30 days ago, so backdated signatures can chain to it.
        request = directory / "ca.csr"
        _run(
            "openssl", "req", "-new", "-key", self.key, "-subj", f"/CN={name}/O=trust tests", "-out", request
        )
        now = datetime.now(UTC)
        _run(
            "openssl", "ca", "-batch", "-selfsign", "-config", self.config, "-keyfile", self.key,
            "-in", request, "-out", self.certificate_path, "-extensions", "root", "-notext",
            "-startdate", _openssl_time(now - timedelta(days=30)),
            "-enddate", _openssl_time(now + timedelta(days=3650)),
        )  # fmt: skip
        self.certificate = x509.load_pem_x509_certificate(self.certificate_path.read_bytes())

    def issue(
        self,
        name: str,
        *,
        crl_url: str | None = None,
        ocsp_url: str | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        eku: str = "codeSigning",
        curve: str = "P-256",
        san: str | None = None,
    ) -> IssuedCertificate:
        """A leaf certificate (and its key) for `name`, with the given revocation URLs and validity."""
        key = self.directory / f"{name}.key"
        request = self.directory / f"{name}.csr"
        certificate = self.directory / f"{name}.pem"
        _run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}", "-out", key)
        _run("openssl", "req", "-new", "-key", key, "-subj", f"/CN={name}/O=trust tests", "-out", request)
        extra = []
        if crl_url:
            extra.append(f"crlDistributionPoints = URI:{crl_url}")
        if ocsp_url:
            extra.append(f"authorityInfoAccess = OCSP;URI:{ocsp_url}")
        if san:
            extra.append(f"subjectAltName = {san}")
        usage = "digitalSignature"
        section = _LEAF_SECTION.format(
            key_usage=usage,
            eku=("critical, " + eku) if eku == "timeStamping" else eku,
            extra="\n".join(extra),
        )
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(section)
        start = not_before or datetime.now(UTC) - timedelta(hours=1)
        end = not_after or datetime.now(UTC) + timedelta(days=365)
        _run(
            "openssl", "ca", "-batch", "-config", self.config, "-in", request, "-out", certificate,
            "-extfile", extensions, "-extensions", "leaf", "-notext",
            "-startdate", _openssl_time(start), "-enddate", _openssl_time(end),
        )  # fmt: skip
        return IssuedCertificate(name, key, certificate, self)

    def certify(self, name: str, public_key_pem: bytes, subject: str) -> Path:
        """A code-signing certificate for a key held elsewhere (an HSM, a KMS): `openssl x509 -new
        -force_pubkey`, signed by this CA, valid for a day. Returns the PEM chain (leaf, root)."""
        public = self.directory / f"{name}.pub"
        public.write_bytes(public_key_pem)
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            "[ leaf ]\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = codeSigning\n"
        )
        certificate = self.directory / f"{name}.pem"
        _run(
            "openssl", "x509", "-new", "-subj", subject, "-force_pubkey", public,
            "-CA", self.certificate_path, "-CAkey", self.key, "-extfile", extensions, "-extensions", "leaf",
            "-days", "1", "-out", certificate,
        )  # fmt: skip
        chain = self.directory / f"{name}-chain.pem"
        chain.write_bytes(certificate.read_bytes() + self.certificate_path.read_bytes())
        return chain

    def revoke(self, issued: IssuedCertificate, reason: str = "keyCompromise") -> None:
        _run(
            "openssl", "ca", "-config", self.config, "-revoke", issued.certificate_path, "-crl_reason", reason
        )

    def crl(self, *, hours: int | None = None) -> bytes:
        """A fresh DER CRL of everything revoked so far (valid `hours`, default the CA's)."""
        pem = self.directory / "ca.crl.pem"
        extra = ["-crlhours", str(hours)] if hours is not None else []
        _run("openssl", "ca", "-config", self.config, "-gencrl", "-crlexts", "crl_ext", "-out", pem, *extra)
        return _run("openssl", "crl", "-in", pem, "-outform", "DER")

    def crl_seconds(self, seconds: int) -> bytes:
        """A DER CRL whose nextUpdate is `seconds` from now (to make a cache go stale quickly)."""
        pem = self.directory / "ca.crl.pem"
        _run(
            "openssl", "ca", "-config", self.config, "-gencrl", "-crlexts", "crl_ext", "-out", pem,
            "-crlsec", str(seconds),
        )  # fmt: skip
        return _run("openssl", "crl", "-in", pem, "-outform", "DER")


class IssuedCertificate:
    def __init__(self, name: str, key_path: Path, certificate_path: Path, ca: OpenSSLCA) -> None:
        self.name = name
        self.key_path = key_path
        self.certificate_path = certificate_path
        self.ca = ca
        self.certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())

    def chain_pem(self) -> bytes:
        """Leaf then root, as `trust sign --format notation --cert` takes it."""
        return self.certificate_path.read_bytes().strip() + b"\n" + self.ca.certificate_path.read_bytes()


# --- HTTP: CRLs and a timestamp authority ---------------------------------------------------------


class ContentServer:
    """`http.server` on 127.0.0.1 (kernel-chosen port): GET serves `files`, POST goes to `posts`."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.posts: dict[str, Callable[[bytes], bytes]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                server.requests.append(f"GET {self.path}")
                body = server.files.get(self.path)
                if body is None:
                    self._answer(404, b"not found", "text/plain")
                else:
                    self._answer(200, body, "application/pkix-crl")

            def do_POST(self) -> None:
                server.requests.append(f"POST {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                handler = server.posts.get(self.path)
                if handler is None:
                    self._answer(404, b"not found", "text/plain")
                    return
                try:
                    answer = handler(body)
                except Exception as exc:  # a failing TSA is a 500, as a real one would answer
                    self._answer(500, str(exc).encode(), "text/plain")
                    return
                self._answer(200, answer, "application/timestamp-reply")

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @classmethod
    def start(cls) -> ContentServer:
        server = cls()
        server._thread.start()
        return server

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def free_port() -> int:
    """A port nobody listens on now (for `openssl ocsp -port`, which cannot report a kernel-chosen one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OcspResponder:
    """`openssl ocsp` answering for `ca` from its index.txt, signing with the CA key itself."""

    def __init__(self, ca: OpenSSLCA, port: int, signer: IssuedCertificate | None = None) -> None:
        self.ca = ca
        self.port = port
        self.signer = signer
        """A delegated responder certificate (id-kp-OCSPSigning) to sign with; None: the CA itself."""
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def reserve(cls, ca: OpenSSLCA, signer: IssuedCertificate | None = None) -> OcspResponder:
        """A responder with its port chosen, not running yet (certificates need the URL first)."""
        return cls(ca, free_port(), signer)

    def start(self) -> OcspResponder:
        log = self.ca.directory / f"ocsp-{self.port}.log"
        signer = self.signer.certificate_path if self.signer else self.ca.certificate_path
        signer_key = self.signer.key_path if self.signer else self.ca.key
        with open(log, "wb") as sink:
            self.process = subprocess.Popen(
                [
                    "setpriv", "--pdeathsig", "KILL", "--",
                    "openssl", "ocsp", "-index", str(self.ca.directory / "index.txt"),
                    "-port", str(self.port),
                    "-rsigner", str(signer), "-rkey", str(signer_key),
                    "-CA", str(self.ca.certificate_path), "-nmin", "60",
                    "-ignore_err",
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )  # fmt: skip
        _LIVE[self.process.pid] = self.process
        # Wait for its "waiting for OCSP client connections" line. Not a probe connection: the
        # responder serves one connection at a time and waits on a probe that sends nothing.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if b"waiting for OCSP client" in log.read_bytes():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"openssl ocsp exited: {log.read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError("openssl ocsp did not listen in time")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            _LIVE.pop(self.process.pid, None)
            self.process = None


@atexit.register
def _stop_all() -> None:
    for process in list(_LIVE.values()):
        process.kill()


_TSA_CONFIG = """\
[ tsa ]
default_tsa = local
[ local ]
dir = {dir}
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
certs = $dir/tsa-chain.pem
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


class OpenSSLTimestampAuthority:
    """An RFC 3161 TSA: its own root CA, a leaf with the critical timeStamping EKU, `openssl ts -reply`.

    The token embeds the TSA certificate and its root (`certs`), in the order openssl is given
    them, which is not the sorted order DER requires (trust.notation.timestamp sorts them).
    """

    def __init__(self, directory: Path, *, crl_url: str | None = None) -> None:
        self.directory = directory
        self.ca = OpenSSLCA(directory / "root", "Test TSA Root")
        self.leaf = self.ca.issue("tsa", eku="timeStamping", crl_url=crl_url)
        (directory / "tsaserial").write_text("01\n")
        (directory / "tsa.pem").write_bytes(self.leaf.certificate_path.read_bytes())
        (directory / "tsa.key").write_bytes(self.leaf.key_path.read_bytes())
        (directory / "tsa-chain.pem").write_bytes(self.ca.certificate_path.read_bytes())
        self.config = directory / "tsa.cnf"
        self.config.write_text(_TSA_CONFIG.format(dir=directory))
        self.root_pem = self.ca.certificate_path.read_bytes()

    def reply(self, query: bytes) -> bytes:
        """The DER TimeStampResp to a DER TimeStampReq, signed now by `openssl ts`."""
        with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".tsq") as query_file:
            query_file.write(query)
            query_file.flush()
            return _run(
                "openssl", "ts", "-reply", "-config", self.config, "-queryfile", query_file.name,
                cwd=self.directory,
            )  # fmt: skip
