"""Build a small runnable example image (busybox from Debian's busybox-static) and push it.

    python scripts/example_image.py 127.0.0.1:5000/demo/hello:v1 [--message TEXT]

Used by scripts/demo.sh; pushes with trust's own registry client over the distribution API.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

from pull import mediatypes as mt
from pull.config import PullConfig
from pull.digest import Digest
from pull.reference import Reference
from pull.registry import RegistryClient

APPLETS = [
    "sh",
    "true",
    "false",
    "cat",
    "echo",
    "ls",
    "id",
    "hostname",
    "ps",
    "sleep",
    "mount",
    "env",
    "httpd",
    "wget",
    "touch",
]


def build_layer(message: str) -> bytes:
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "etc", "tmp", "proc", "sys", "dev"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755, 0
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(busybox), 0o755, 0
        tar.addfile(info, io.BytesIO(busybox))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode, link.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
            tar.addfile(link)
        text = (message + "\n").encode()
        info = tarfile.TarInfo("etc/motd")
        info.size, info.mode, info.mtime = len(text), 0o644, 0
        tar.addfile(info, io.BytesIO(text))
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reference")
    parser.add_argument("--message", default="hello from a verified image")
    args = parser.parse_args()
    ref = Reference.parse(args.reference)
    tar = build_layer(args.message)
    layer = gzip.compress(tar, compresslevel=6, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/cat", "/etc/motd"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [str(Digest.of_bytes(tar))]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": str(Digest.of_bytes(config)),
                "size": len(config),
            },
            "layers": [
                {"mediaType": mt.OCI_LAYER_GZIP, "digest": str(Digest.of_bytes(layer)), "size": len(layer)}
            ],
        }
    ).encode()
    with RegistryClient(ref.api_host, config=PullConfig()) as client:
        client.push_blob(ref.repository, Digest.of_bytes(layer), len(layer), layer)
        client.push_blob(ref.repository, Digest.of_bytes(config), len(config), config)
        digest = client.push_manifest(ref.repository, ref.tag or "latest", manifest, mt.OCI_MANIFEST)
    print(f"{ref.name}@{digest}")


if __name__ == "__main__":
    main()
