"""Benchmark: the admission webhook under load, and the CI gate against skopeo.

    .venv/bin/python benchmarks/bench_webhook.py [--reviews 5000] [--connections 16] [--images 20]

With `wrk` installed (Debian package), the warm load is measured a second time with it: the
Python load generator shares the two cores with the server and is slower than what it measures.

1. Starts a local registry, pushes and signs `--images` images, writes a policy, starts
   `trust webhook serve` (workers = CPUs) with a test CA on 127.0.0.1.
2. Cold: one `/validate` review per image, each verified once (empty cache): p99 against the median
   of single `trust verify --policy` processes of one image (target: p99 <= 1.5x).
3. Warm: `--reviews` reviews of those images over `--connections` concurrent keep-alive TLS
   connections (the load generator runs on the same machine): p50, p99, reviews per second
   (targets: >= 1,000/s, p99 <= 25 ms).
4. The gate: `trust verify --policy` of 40 signed images in one process against 40 sequential
   `skopeo inspect --raw` of them (target: ratio <= 1.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from common import RAW, TRUST, median, timed
from support.images import push_image, simple_image
from support.registry import start_registry
from support.webpki import TestCA


def review(image: str) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "namespace": "bench",
        "operation": "CREATE",
        "object": pod,
    }
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


async def load(
    url: str, context: ssl.SSLContext, bodies: list[bytes], total: int, connections: int
) -> list[float]:
    latencies: list[float] = []
    queue = iter(range(total))

    async def worker() -> None:
        async with httpx.AsyncClient(
            verify=context, timeout=30, limits=httpx.Limits(max_connections=1)
        ) as client:
            for n in queue:
                started = time.perf_counter()
                response = await client.post(url, content=bodies[n % len(bodies)])
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200 and response.json()["response"]["allowed"], response.text

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies


WRK_SCRIPT = """
bodies = {}
counter = 0
function init(args)
  for i, path in ipairs(args) do
    local f = io.open(path, "rb"); bodies[i] = f:read("*a"); f:close()
  end
end
function request()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  return wrk.format("POST", "/validate", {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  io.write(string.format("WRK %d %d %.3f %.3f %d\\n", summary.requests, summary.duration,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status))
end
"""


def wrk_load(
    url: str, bodies: list[bytes], folder: Path, seconds: int, connections: int
) -> tuple[float, float, float]:
    """(reviews/s, p50 ms, p99 ms) from wrk: a C load generator, so the Python one is not measured."""
    paths = []
    for n, body in enumerate(bodies):
        path = folder / f"review-{n}.json"
        path.write_bytes(body)
        paths.append(str(path))
    script = folder / "reviews.lua"
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url, "--", *paths],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK "))
    requests, duration_us, p50, p99, errors = line.split()[1:]
    assert int(errors) == 0, out
    return int(requests) / (int(duration_us) / 1e6), float(p50), float(p99)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=RAW)
    parser.add_argument("--reviews", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--gate-images", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trust-bench-webhook-"))
    env = {**os.environ, "TRUST_PASSWORD": "bench", "TRUST_STORE": str(work / "store")}
    registry = start_registry(work / "registry")
    server: subprocess.Popen[bytes] | None = None
    try:
        timed([TRUST, "keygen", "--output-prefix", str(work / "k")], env=env)
        count = max(args.images, args.gate_images)
        refs = []
        for n in range(count):
            pushed = push_image(registry, f"bench/app{n}", simple_image(f"bench {n}\n".encode()), tag="v1")
            refs.append(f"{registry.host}/bench/app{n}@{pushed.digest}")
        for ref in refs:
            timed([TRUST, "sign", "--tlog-upload=false", "--key", str(work / "k.key"), ref], env=env)
        policy = work / "policy.yaml"
        policy.write_text(
            f"version: 1\nauthorities:\n  release:\n    cosign-keys: [{work / 'k.pub'}]\n"
            f"rules:\n  - scope: {registry.host}/bench/*\n    signed-by: [release]\n"
            "default:\n  reject: true\n"
        )
        ca = TestCA.create(work / "ca")
        cert, key = ca.server(work / "tls", ["127.0.0.1"])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [
                TRUST,
                "webhook",
                "serve",
                "--policy",
                str(policy),
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        url = f"https://127.0.0.1:{port}"
        context = ca.context()
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", verify=context, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        images = refs[: args.images]
        bodies = [review(image) for image in images]

        single = [
            timed([TRUST, "verify", "--policy", str(policy), images[0]], env=env).wall for _ in range(5)
        ]
        cold = asyncio.run(load(url + "/validate", context, bodies, len(bodies), args.connections))
        asyncio.run(load(url + "/validate", context, bodies, len(bodies) * 5, args.connections))  # warm-up
        started = time.perf_counter()
        warm = asyncio.run(load(url + "/validate", context, bodies, args.reviews, args.connections))
        elapsed = time.perf_counter() - started
        wrk = wrk_load(url, bodies, work, 10, args.connections) if shutil.which("wrk") else None

        gate_refs = refs[: args.gate_images]
        gate = timed(
            [TRUST, "verify", "--policy", str(policy), *gate_refs],
            env={**env, "TRUST_STORE": str(work / "gate")},
        )
        skopeo_started = time.perf_counter()
        for ref in gate_refs:
            subprocess.run(
                ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        skopeo = time.perf_counter() - skopeo_started
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"webhook, {os.cpu_count()} workers, {args.connections} keep-alive TLS connections, "
        f"{args.images} images"
    )
    print(f"  cold (each image verified once): p99 {percentile(cold, 0.99) * 1000:7.1f} ms")
    print(f"  one `trust verify --policy` process:  {median(single) * 1000:7.1f} ms (median of 5)")
    print(
        f"    ratio cold p99 / single verify: {percentile(cold, 0.99) / median(single):.2f} (target <= 1.5)"
    )
    print(
        f"  warm, {args.reviews} reviews: p50 {percentile(warm, 0.5) * 1000:.1f} ms, p99 "
        f"{percentile(warm, 0.99) * 1000:.1f} ms (target <= 25), {args.reviews / elapsed:.0f} reviews/s "
        "(target >= 1000)"
    )
    if wrk is not None:
        rate, p50, p99 = wrk
        print(
            f"  warm, wrk for 10 s (C load generator): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"{rate:.0f} reviews/s"
        )
    print(
        f"gate: trust verify --policy of {len(gate_refs)} images {gate.wall:.2f} s, "
        f"{len(gate_refs)} x skopeo inspect --raw {skopeo:.2f} s, "
        f"ratio {gate.wall / skopeo:.2f} (target <= 1.0)"
    )


if __name__ == "__main__":
    main()
