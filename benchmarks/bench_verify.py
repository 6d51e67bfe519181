"""Benchmark: `trust verify` of a signed image (whole process) and `trust --help`.

    .venv/bin/python benchmarks/bench_verify.py [--runs 15]

Starts a local registry, pushes and signs a small image with a fresh key, then times complete
`trust verify --key` processes and reports the median, and how much of it is interpreter start-up
plus imports (measured by a process that imports the same modules and exits).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from common import RAW, TRUST, VENV_BIN, median, timed
from support.images import push_image, simple_image
from support.registry import start_registry

IMPORTS = (
    "import trust.cli.app, trust.cosign.signing, trust.cosign.simple_signing, trust.attached, "
    "trust.sigstore.bundles, "
    "pull.clients, pull.pipeline, pull.referrers"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trust-bench-verify-"))
    env = {**os.environ, "TRUST_PASSWORD": "bench", "TRUST_STORE": str(work / "store")}
    try:
        registry = start_registry(work / "registry")
        try:
            pushed = push_image(registry, "bench/signed", simple_image(b"bench\n"), tag="v1")
            ref = f"{registry.host}/bench/signed@{pushed.digest}"
            timed([TRUST, "keygen", "--output-prefix", str(work / "k")], env=env)
            timed([TRUST, "sign", "--tlog-upload=false", "--key", str(work / "k.key"), ref], env=env)
            verify = [TRUST, "verify", "--key", str(work / "k.pub"), ref]
            python = str(VENV_BIN / "python")
            runs = {"verify": [], "imports": [], "help": [], "python": []}
            commands = {
                "verify": verify,
                "imports": [python, "-c", IMPORTS],
                "help": [TRUST, "--help"],
                "python": [python, "-c", "pass"],
            }
            for _ in range(args.runs):
                for name, command in commands.items():
                    runs[name].append(timed(command, env=env).wall)
        finally:
            registry.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {name: median(values) for name, values in runs.items()}
    print(f"{args.runs} runs each, medians:")
    print(f"trust verify (signed image, local registry)  {med['verify'] * 1000:6.0f} ms   (target <= 300 ms)")
    print(f"  of which python start-up                    {med['python'] * 1000:6.0f} ms")
    print(f"  of which start-up + imports                 {med['imports'] * 1000:6.0f} ms")
    print(f"trust --help                                  {med['help'] * 1000:6.0f} ms   (target <= 150 ms)")


if __name__ == "__main__":
    main()
