"""Benchmark: `trust pull` against `skopeo copy docker://… oci:DIR:tag` from the same local registry.

    .venv/bin/python benchmarks/bench_pull.py [--size-mb 320] [--layers 4] [--runs 5]

Builds a gzip image of seeded random data (≥300 MB, ≥3 layers), pushes it to a CNCF distribution
registry on 127.0.0.1, then alternates cold pulls (fresh destination each time) of both tools and
prints medians, the ratio trust/skopeo, and CPU time against `sha256sum` of the same blobs (the cost
of hashing the bytes once).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import RAW, TRUST, median, timed
from support.images import build_big_image, push_image
from support.registry import start_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--size-mb", type=int, default=320)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trust-bench-pull-"))
    try:
        registry = start_registry(work / "registry")
        try:
            image = build_big_image(work / "image", total_size=args.size_mb << 20, layers=args.layers)
            push_image(registry, "bench/big", image, tag="v1")
            ref = f"{registry.host}/bench/big:v1"
            blob_bytes = sum(layer.size for layer in image.layers)
            layer_files = [str(layer.path) for layer in image.layers if layer.path is not None]
            hash_once = timed(["sha256sum", *layer_files])

            trust_runs, skopeo_runs = [], []
            for n in range(args.runs):
                for tool in ("trust", "skopeo") if n % 2 == 0 else ("skopeo", "trust"):
                    dest = work / f"{tool}-{n}"
                    if tool == "trust":
                        trust_runs.append(timed([TRUST, "pull", "--store", str(dest), ref]))
                    else:
                        skopeo_runs.append(
                            timed(
                                [
                                    "skopeo",
                                    "copy",
                                    "-q",
                                    "--src-tls-verify=false",
                                    f"docker://{ref}",
                                    f"oci:{dest}:v1",
                                ]
                            )
                        )
                    shutil.rmtree(dest)
        finally:
            registry.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    t_wall, s_wall = median([r.wall for r in trust_runs]), median([r.wall for r in skopeo_runs])
    t_cpu, s_cpu = median([r.cpu for r in trust_runs]), median([r.cpu for r in skopeo_runs])
    mb = blob_bytes / 1e6
    print(f"image: {len(image.layers)} gzip layers, {mb:.0f} MB of blobs; {args.runs} alternating runs each")
    print(f"trust pull   median wall {t_wall:6.2f} s ({mb / t_wall:6.0f} MB/s)  cpu {t_cpu:6.2f} s")
    print(f"skopeo copy  median wall {s_wall:6.2f} s ({mb / s_wall:6.0f} MB/s)  cpu {s_cpu:6.2f} s")
    print(f"sha256sum of the blobs   wall {hash_once.wall:6.2f} s                cpu {hash_once.cpu:6.2f} s")
    print(f"ratio trust/skopeo (wall): {t_wall / s_wall:.2f}   (target <= 1.0)")
    print(f"trust cpu / hashing once:  {t_cpu / hash_once.cpu:.2f}")


if __name__ == "__main__":
    main()
