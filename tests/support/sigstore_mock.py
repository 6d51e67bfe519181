"""A local Sigstore (Fulcio, Rekor, a timestamp authority) for keyless tests, from `shared/tools/`.

    mock = start_sigstore_mock(tmp_path / "sigstore")
    mock.trust_config      # a sigstore ClientTrustConfig naming the mock (for `--trust-config`)
    mock.trusted_root      # the matching trusted root (for `--trusted-root` and policies)
    mock.token("dev@example.test")   # an identity token the mock's Fulcio accepts
    mock.stop()

`scripts/setup.sh` installs the mock's npm packages once into `/var/cache/trust-sigstore-mock`
(`npm install`, the only network step); tests start `node mock_server.js PORT OUT` on 127.0.0.1
and wait for it to answer. The issuer of every token is `ISSUER`.
"""

from __future__ import annotations

import atexit
import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from support.openssl_pki import free_port

ISSUER = "https://issuer.mock.test"
_SOURCES = (
    Path(__file__).resolve().parents[3] / "shared" / "tools" / "sigstore-mock",
    Path("/work/shared/tools/sigstore-mock"),
)
INSTALLED = Path("/var/cache/trust-sigstore-mock")


class SigstoreMock:
    def __init__(self, process: subprocess.Popen[bytes], url: str, out: Path) -> None:
        self.process, self.url, self.out = process, url, out

    @property
    def trust_config(self) -> Path:
        return self.out / "trust_config.json"

    @property
    def trusted_root(self) -> Path:
        return self.out / "trusted_root.json"

    def token(self, subject: str) -> str:
        """An unsigned JWT for `subject` from `ISSUER` (the mock's Fulcio checks claims, not keys)."""

        def part(document: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

        now = int(time.time())
        claims = {"iss": ISSUER, "sub": subject, "aud": "sigstore", "iat": now, "nbf": now, "exp": now + 600}
        signature = base64.urlsafe_b64encode(b"x" * 32).rstrip(b"=").decode()
        return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{signature}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def installed() -> Path:
    """The mock with its npm packages (installed by scripts/setup.sh; installed here if missing)."""
    if (INSTALLED / "node_modules").is_dir():
        return INSTALLED
    source = next((path for path in _SOURCES if path.is_dir()), _SOURCES[0])
    INSTALLED.mkdir(parents=True, exist_ok=True)
    for name in ("mock_server.js", "package.json", "mktoken.py"):
        shutil.copyfile(source / name, INSTALLED / name)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund"], cwd=INSTALLED, check=True, capture_output=True
    )
    return INSTALLED


def start_sigstore_mock(work: Path, timeout: float = 20.0) -> SigstoreMock:
    home = installed()
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (work / "mock.log").open("wb")
    process = subprocess.Popen(
        [
            "setpriv",
            "--pdeathsig",
            "KILL",
            "node",
            str(home / "mock_server.js"),
            str(port),
            str(work / "out"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    mock = SigstoreMock(process, f"http://127.0.0.1:{port}", work / "out")
    atexit.register(mock.stop)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the Sigstore mock exited: {(work / 'mock.log').read_text()[-2000:]}")
        if mock.trust_config.exists() and mock.trusted_root.exists():
            try:
                httpx.get(mock.url, timeout=1)
                return mock
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            mock.stop()
            raise RuntimeError("the Sigstore mock did not start")
        time.sleep(0.1)
