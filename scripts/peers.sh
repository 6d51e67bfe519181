#!/usr/bin/env bash
# Build the real peers the interop tests run against (tests/interop/, docs/interop.md), pinned,
# into a cache outside the repository; what is already built is skipped. Prints the bin folders.
#
#   bash scripts/peers.sh            # TRUST_PEERS_DIR (default /var/cache/trust-peers)
#
# cosign and crane come straight from `go install`. notation and olareg
# are not listed by the Go module proxy here (their version lists answer 403, which `go install`
# needs for its deprecation check), but the pinned versions are served: each is built from a
# throwaway module that requires it.
set -euo pipefail

PEERS_DIR=${TRUST_PEERS_DIR:-/var/cache/trust-peers}
COSIGN=v3.1.3        # cosign v3: bundles as OCI 1.1 referrers by default, what trust writes too
NOTATION=v1.3.2
CRANE=v0.22.1        # go-containerregistry
OLAREG=v0.1.2        # olareg: a small registry that serves the OCI 1.1 referrers API

build() {  # build NAME VERSION PACKAGE
    local bin="$PEERS_DIR/$1-$2/bin"
    [ -x "$bin/$1" ] && return 0
    mkdir -p "$bin"
    echo "peers: building $1 $2" >&2
    GOBIN="$bin" GOFLAGS=-trimpath nice go install "$3@$2" >"$PEERS_DIR/$1-$2.log" 2>&1 \
        || { cat "$PEERS_DIR/$1-$2.log" >&2; return 1; }
}

build_unlisted() {  # build_unlisted NAME VERSION PACKAGE: a module whose version list the proxy refuses
    local bin="$PEERS_DIR/$1-$2/bin" module
    [ -x "$bin/$1" ] && return 0
    mkdir -p "$bin"
    echo "peers: building $1 $2" >&2
    module=$(mktemp -d)
    (
        cd "$module"
        go mod init example.invalid/trust-peers >/dev/null 2>&1
        go get "$3@$2"
        GOBIN="$bin" GOFLAGS=-trimpath nice go install "$3"
    ) >"$PEERS_DIR/$1-$2.log" 2>&1 || { cat "$PEERS_DIR/$1-$2.log" >&2; rm -rf "$module"; return 1; }
    rm -rf "$module"
}

mkdir -p "$PEERS_DIR"
command -v go >/dev/null || { echo "peers: go is not installed" >&2; exit 1; }
# In parallel: each build is mostly waiting on the module proxy at first, then on the compiler.
build crane "$CRANE" github.com/google/go-containerregistry/cmd/crane &
build_unlisted notation "$NOTATION" github.com/notaryproject/notation/cmd/notation &
build_unlisted olareg "$OLAREG" github.com/olareg/olareg/cmd/olareg &
build cosign "$COSIGN" github.com/sigstore/cosign/v3/cmd/cosign &
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
[ "$failed" = 0 ] || { echo "peers: a build failed" >&2; exit 1; }
for tool in cosign:$COSIGN notation:$NOTATION crane:$CRANE olareg:$OLAREG; do
    echo "$PEERS_DIR/${tool%%:*}-${tool#*:}/bin"
done
