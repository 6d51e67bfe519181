"""Benchmark: `trust verify-attestation` of an image with 3 attestations against `trust verify`.

    .venv/bin/python benchmarks/bench_attest.py [--runs 15] [--sbom-mb 1]

Starts a local registry, pushes a small image, signs it, and attests it three times with the same
key (SLSA provenance, an SPDX SBOM of about 1 MB, a vulnerability report), each written both as
cosign's `.att` layer and as a Sigstore bundle referrer. Times whole processes, alternating:
`trust verify --key` (the signature) and `trust verify-attestation --key --type spdxjson` (the
SBOM: one extra fetch per layout, decode, check). Prints the medians and the ratio (target <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from common import RAW, TRUST, median, timed
from support.images import push_image, simple_image
from support.registry import start_registry


def sbom(megabytes: float) -> dict[str, object]:
    packages = []
    size = 0
    n = 0
    while size < megabytes * 1024 * 1024:
        package = {
            "SPDXID": f"SPDXRef-Package-{n}",
            "name": f"package-{n}",
            "versionInfo": f"1.{n % 97}.{n % 13}",
            "downloadLocation": "NOASSERTION",
            "checksums": [{"algorithm": "SHA256", "checksumValue": f"{n:064x}"}],
        }
        packages.append(package)
        size += len(json.dumps(package))
        n += 1
    return {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": "bench", "packages": packages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--sbom-mb", type=float, default=1.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trust-bench-attest-"))
    env = {**os.environ, "TRUST_PASSWORD": "bench", "TRUST_STORE": str(work / "store")}
    predicates = {
        "slsaprovenance1": {
            "buildDefinition": {"buildType": "bench"},
            "runDetails": {"builder": {"id": "ci"}},
        },
        "spdxjson": sbom(args.sbom_mb),
        "vuln": {"scanner": {"uri": "bench", "result": []}, "metadata": {}},
    }
    try:
        registry = start_registry(work / "registry")
        try:
            pushed = push_image(registry, "bench/attested", simple_image(b"bench\n"), tag="v1")
            ref = f"{registry.host}/bench/attested@{pushed.digest}"
            timed([TRUST, "keygen", "--output-prefix", str(work / "k")], env=env)
            timed([TRUST, "sign", "--tlog-upload=false", "--key", str(work / "k.key"), ref], env=env)
            for kind, predicate in predicates.items():
                path = work / f"{kind}.json"
                path.write_text(json.dumps(predicate))
                timed(
                    [
                        TRUST,
                        "attest",
                        "--tlog-upload=false",
                        ref,
                        "--predicate",
                        str(path),
                        "--type",
                        kind,
                        "--key",
                        str(work / "k.key"),
                    ],
                    env=env,
                )
            commands = {
                "verify": [TRUST, "verify", "--key", str(work / "k.pub"), ref],
                "verify-attestation": [
                    TRUST,
                    "verify-attestation",
                    ref,
                    "--type",
                    "spdxjson",
                    "--key",
                    str(work / "k.pub"),
                    "--output",
                    "json",
                ],
            }
            runs: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.runs):
                for name, command in commands.items():
                    runs[name].append(timed(command, env=env).wall)
        finally:
            registry.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {name: median(values) for name, values in runs.items()}
    size = len(json.dumps(predicates["spdxjson"])) / 1024 / 1024
    print(f"{args.runs} runs each, medians; 3 attestations x 2 layouts, SBOM {size:.2f} MB:")
    print(f"trust verify --key                          {med['verify'] * 1000:6.0f} ms")
    print(f"trust verify-attestation --type spdxjson    {med['verify-attestation'] * 1000:6.0f} ms")
    ratio = med["verify-attestation"] / med["verify"]
    print(f"ratio verify-attestation / verify           {ratio:6.2f}   (target <= 1.5)")


if __name__ == "__main__":
    main()
