"""A local, offline Sigstore for tests: Fulcio, Rekor (v1) and a timestamp authority on 127.0.0.1.

`shared/tools/sigstore-mock/mock_server.js` serves `@sigstore/mock`'s real handlers over HTTP and
writes the trusted root, signing config and `ClientTrustConfig` that describe it (fresh keys per
start). `scripts/setup.sh` installs it with npm into `.cache/sigstore-mock`; a missing install fails
the tests that need it (they guard the signing paths), it never skips them.

    with start_sigstore_mock(tmp_path / "mock") as mock:
        mock.url                 # "http://127.0.0.1:PORT" (Fulcio, Rekor and the TSA's base)
        mock.trust_config        # ClientTrustConfig JSON (trusted root + signing config)
        mock.trusted_root        # the trusted root alone, for verification
        mock.token("dev@example.test")   # an identity token the mock's Fulcio accepts

The mock takes its port on the command line and writes it into the files before listening, so the
port is chosen here and a start that loses the race for it (EADDRINUSE) is retried with another.
As `support.registry`, the process dies with the test process (`setpriv --pdeathsig KILL`).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from support.processes import free_port, terminate, track

MOCK_DIR = Path(__file__).resolve().parents[2] / ".cache" / "sigstore-mock"
"""Where `scripts/setup.sh` installed the mock and its node_modules."""
ISSUER = "https://issuer.mock.test"
"""The OIDC issuer the mock's Fulcio puts into certificates (it takes the token's `iss`)."""
START_TIMEOUT = 20.0


class SigstoreMockError(RuntimeError):
    """The mock did not start; the message says why (not installed, or its log tail)."""


class SigstoreMock:
    def __init__(self, process: subprocess.Popen[bytes], port: int, out: Path, log: Path) -> None:
        self._process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.out = out
        self.log_path = log
        self.trust_config = out / "trust_config.json"
        self.trusted_root = out / "trusted_root.json"
        self.signing_config = out / "signing_config.json"

    @property
    def tsa_url(self) -> str:
        return f"{self.url}/api/v1/timestamp"

    def token(self, subject: str, issuer: str = ISSUER, lifetime: int = 600) -> str:
        """An unsigned JWT the mock's Fulcio accepts (it does not check signatures): `sub` becomes
        the certificate's e-mail SAN, `iss` its issuer extension."""
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": subject,
            "aud": "sigstore",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }

        def part(value: object) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        signature = base64.urlsafe_b64encode(b"x" * 32).rstrip(b"=").decode()
        return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{signature}"

    def requests(self) -> list[str]:
        """`METHOD PATH` of every request the mock handled so far (from its log)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [" ".join(line.split()[1:3]) for line in lines if line.endswith("handled")]

    def stop(self) -> None:
        terminate(self._process)

    def __enter__(self) -> SigstoreMock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def start_sigstore_mock(workdir: Path, attempts: int = 5) -> SigstoreMock:
    node = shutil.which("node")
    if node is None or not (MOCK_DIR / "node_modules" / "@sigstore" / "mock").is_dir():
        raise SigstoreMockError(f"the sigstore mock is not installed in {MOCK_DIR}: run scripts/setup.sh")
    workdir.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(attempts):
        port = free_port()
        out = workdir / f"out-{attempt}"
        log = workdir / f"mock-{attempt}.log"
        command = [node, str(MOCK_DIR / "mock_server.js"), str(port), str(out)]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        with open(log, "wb") as sink:
            process = subprocess.Popen(command, cwd=MOCK_DIR, stdout=sink, stderr=subprocess.STDOUT)
        track(process)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "listening" in text and (out / "trust_config.json").is_file():
                return SigstoreMock(process, port, out, log)
            if process.poll() is not None:
                break
            time.sleep(0.05)
        terminate(process)
        last = log.read_text(errors="replace")[-2000:]
        if "EADDRINUSE" not in last:
            break
    raise SigstoreMockError(f"the sigstore mock did not start:\n{last}")


__all__ = ["ISSUER", "SigstoreMock", "SigstoreMockError", "start_sigstore_mock"]
