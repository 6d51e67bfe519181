"""Benchmark: `trust audit --offline` re-hash throughput against one `sha256sum` over the same blobs.

    .venv/bin/python benchmarks/bench_audit.py [--size-mb 1100] [--layers 8] [--runs 3] [--workers N]

Builds a store holding ≥ 1 GB of blobs (an image of seeded random gzip layers written straight into
the store's OCI layout, plus an accept-anything policy), reads every blob once so that both tools
hash from the page cache (re-hashing, not the disk, is what is measured), then alternates runs of
`sha256sum BLOBS…` and `trust audit --offline` and prints median wall times, MB/s and the ratio.
The audit's own hashing time (from its JSON report) is printed too: the wall time adds Python
start-up, imports and the policy check. Target: ratio ≥ 1.5 (both cores against one process).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import RAW, TRUST, median, timed
from support.images import build_big_image, write_oci_layout

REF = "bench.local/audit/big:v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--size-mb", type=int, default=1100)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="trust audit --workers (default: cores)")
    parser.add_argument("--keep", type=Path, default=None, help="build the store here and keep it")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="trust-bench-audit-"))
    try:
        store_path = work / "store"
        if not (store_path / "index.json").exists() or args.keep is None:
            image = build_big_image(work / "image", total_size=args.size_mb << 20, layers=args.layers)
            # The store is an OCI layout: written directly (`trust audit` adds its meta/ on opening).
            write_oci_layout(store_path, image, tag=REF)
            shutil.rmtree(work / "image")
        policy = work / "policy.yaml"
        policy.write_text(
            "version: 1\nrules:\n  - scope: bench.local\n    insecure-accept-anything: true\n"
            "default:\n  reject: true\n"
        )
        files = sorted(str(p) for p in (store_path / "blobs" / "sha256").iterdir())
        total = sum(Path(f).stat().st_size for f in files)
        for name in files:  # warm the page cache: both tools then measure hashing, not the disk
            with open(name, "rb") as f:
                while f.read(1 << 24):
                    pass

        audit = [TRUST, "audit", "--offline", "--store", str(store_path), "--policy", str(policy)]
        if args.workers:
            audit += ["--workers", str(args.workers)]
        sha_walls, trust_walls, hashing, openssl_walls = [], [], [], []
        openssl = shutil.which("openssl")
        for n in range(args.runs):
            for tool in ("sha256sum", "trust") if n % 2 == 0 else ("trust", "sha256sum"):
                if tool == "sha256sum":
                    sha_walls.append(timed(["sha256sum", *files]).wall)
                    if openssl:  # one process of the same SHA-256 code hashlib uses (OpenSSL, SHA-NI)
                        openssl_walls.append(timed([openssl, "dgst", "-sha256", *files]).wall)
                else:
                    started = time.perf_counter()
                    done = subprocess.run([*audit, "--output", "json"], capture_output=True, check=True)
                    trust_walls.append(time.perf_counter() - started)
                    hashing.append(json.loads(done.stdout)["hashing"]["seconds"])
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    mb = total / 1e6
    sha, trust, inner = median(sha_walls), median(trust_walls), median(hashing)
    print(f"store: {len(files)} blobs, {mb:.0f} MB; {args.runs} alternating runs each, warm page cache")
    print(f"sha256sum (1 process)      median wall {sha:6.2f} s  {mb / sha:7.0f} MB/s")
    print(f"trust audit --offline      median wall {trust:6.2f} s  {mb / trust:7.0f} MB/s")
    print(f"  of which re-hashing                  {inner:6.2f} s  {mb / inner:7.0f} MB/s")
    if openssl_walls:
        one = median(openssl_walls)
        print(f"openssl dgst -sha256 (1 process) wall {one:6.2f} s  {mb / one:7.0f} MB/s")
    print(f"ratio trust/sha256sum throughput (wall): {sha / trust:.2f}   (target >= 1.5)")
    print(f"ratio, re-hashing only:                  {sha / inner:.2f}")
    if openssl_walls:
        print(f"ratio trust/openssl (wall):              {median(openssl_walls) / trust:.2f}")


if __name__ == "__main__":
    main()
