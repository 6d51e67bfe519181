#!/usr/bin/env bash
# Install what trust and its tests need on Debian 12 (run as root). Idempotent and quiet when done before.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 curl python3-venv python3-pip docker-registry runc crun umoci skopeo buildah zstd busybox-static iproute2
    containernetworking-plugins iptables tini
    softhsm2 opensc openssl nodejs
    gcc libc6-dev)  # the `trust` executable (trust/cli/console.c); without them it is a Python script

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# kubectl builds the Kubernetes objects of the webhook tests (offline, --dry-run=client). Some
# machines carry a kubectl of their own (a cloud SDK's); Debian's package would collide with it.
if ! command -v kubectl >/dev/null 2>&1; then
    echo "setup: installing kubernetes-client" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
# npm serves the offline Sigstore (Fulcio, Rekor, TSA from @sigstore/mock) of the signing tests. NodeSource's
# nodejs carries npm; Debian's does not.
if ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing npm" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
# The mock's sources live in shared/tools/sigstore-mock beside the checkout; its node_modules go in
# .cache/sigstore-mock (tests/support/sigstore_mock.py looks there), installed again only when its
# package.json changes.
for mock_src in ../shared/tools/sigstore-mock /work/shared/tools/sigstore-mock; do
    [ -f "$mock_src/package.json" ] && break
done
if [ -f "$mock_src/package.json" ]; then
    mock_dst=.cache/sigstore-mock
    if ! cmp -s "$mock_src/package.json" "$mock_dst/package.json" || [ ! -d "$mock_dst/node_modules/@sigstore/mock" ]; then
        echo "setup: installing the sigstore mock (npm)" >&2
        mkdir -p "$mock_dst"
        cp "$mock_src"/*.js "$mock_src"/*.py "$mock_src/package.json" "$mock_dst/"
        (cd "$mock_dst" && npm install --no-audit --no-fund --silent >/dev/null)
    else
        cp "$mock_src"/*.js "$mock_src"/*.py "$mock_dst/"
    fi
fi
# Debian's docker-registry package may start a system service; trust's tests and demo start their own.

# The platform's interpreter, Debian's python3, even where another python3 comes first on PATH
# (pyenv's, say): the tests and benchmarks run on what a Debian 12 host runs (3.11.2, which for
# one has no tarfile extraction filters).
base_python=/usr/bin/python3
if [ -x .venv/bin/python ] && ! grep -qx "home = $(dirname "$base_python")" .venv/pyvenv.cfg; then
    echo "setup: .venv was made from another python3; making it again from $base_python" >&2
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$base_python" -m venv .venv
fi
if ! .venv/bin/python -c "import trust.cli.app, pytest, mypy" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.installed ] || [ setup.py -nt .venv/.installed ] \
    || [ trust/cli/console.c -nt .venv/.installed ] || [ ! -x .venv/bin/trust-python ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
    # "compat" puts the checkout on sys.path with a plain .pth line. The default editable mode
    # imports a finder module at every interpreter start (~10 ms, a tenth of a warm `trust run`),
    # which an installed (non-editable) trust does not pay either. setuptools calls compat
    # transitional: when it is gone, the default mode is the fallback.
    if ! .venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat >.venv/install.log 2>&1 \
        && ! .venv/bin/pip install -q -e '.[test]' >>.venv/install.log 2>&1; then
        cat .venv/install.log >&2
        exit 1
    fi
    touch .venv/.installed
fi

