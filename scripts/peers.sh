#!/usr/bin/env bash
# Build the real peers the interop tests run against (tests/interop/, docs/interop.md), pinned,
# into a cache outside the repository; what is already built is skipped. Prints the bin folders.
#
#   bash scripts/peers.sh            # TRUST_PEERS_DIR (default /var/cache/trust-peers)
#
# cosign, crane and the Sigstore services come straight from `go install`. notation and olareg
# are not listed by the Go module proxy here (their version lists answer 403, which `go install`
# needs for its deprecation check), but the pinned versions are served: each is built from a
# throwaway module that requires it.
#
# Each tool is built into a staging folder and moved into place in one rename, so a reader (another
# checkout's tests on the same machine, a build killed half-way) never sees half a binary; the
# binary is named after the tool (rekor-tiles' and tesseract's commands are both called `posix`).
set -euo pipefail

PEERS_DIR=${TRUST_PEERS_DIR:-/var/cache/trust-peers}
COSIGN=v3.1.3        # cosign v3: bundles as OCI 1.1 referrers by default, what trust writes too
NOTATION=v1.3.2
CRANE=v0.22.1        # go-containerregistry
OLAREG=v0.1.2        # olareg: a small registry that serves the OCI 1.1 referrers API
# A local Sigstore for keyless and transparency-log cells (tests/support/sigstore_services.py):
FULCIO=v1.8.8        # certificate authority (--ca=ephemeralca), OIDC tokens from the tests' own issuer
REKOR_TILES=v2.3.0   # Rekor v2 on Tessera's POSIX backend: a plain folder, no database
TSA=v2.1.3           # sigstore timestamp-authority, in-memory signer
TESSERACT=v0.1.1     # a static-ct-api certificate transparency log (POSIX), so Fulcio embeds real SCTs
# A Kubernetes API server for the admission webhook (tests/support/kube.py):
KUBERNETES=v1.36.3   # kube-apiserver; its staging modules (k8s.io/api, …) are the matching v0.36.3
ETCD=v3.6.16

build() {  # build NAME VERSION PACKAGE: go install into a staging folder, then one rename
    local bin="$PEERS_DIR/$1-$2/bin" stage built
    [ -x "$bin/$1" ] && return 0
    echo "peers: building $1 $2" >&2
    stage=$(mktemp -d "$PEERS_DIR/.stage-$1.XXXXXX")
    mkdir "$stage/bin"
    GOBIN="$stage/bin" GOFLAGS=-trimpath nice go install "$3@$2" >"$PEERS_DIR/$1-$2.log" 2>&1 \
        || { cat "$PEERS_DIR/$1-$2.log" >&2; rm -rf "$stage"; return 1; }
    place "$1" "$2" "$stage"
}

build_unlisted() {  # build_unlisted NAME VERSION PACKAGE: a module whose version list the proxy refuses
    local bin="$PEERS_DIR/$1-$2/bin" module stage
    [ -x "$bin/$1" ] && return 0
    echo "peers: building $1 $2" >&2
    stage=$(mktemp -d "$PEERS_DIR/.stage-$1.XXXXXX")
    mkdir "$stage/bin"
    module=$(mktemp -d)
    (
        cd "$module"
        go mod init example.invalid/trust-peers >/dev/null 2>&1
        go get "$3@$2"
        GOBIN="$stage/bin" GOFLAGS=-trimpath nice go install "$3"
    ) >"$PEERS_DIR/$1-$2.log" 2>&1 || { cat "$PEERS_DIR/$1-$2.log" >&2; rm -rf "$module" "$stage"; return 1; }
    rm -rf "$module"
    place "$1" "$2" "$stage"
}

build_kube_apiserver() {  # build_kube_apiserver VERSION
    # `go install k8s.io/kubernetes/cmd/kube-apiserver@V` is refused: k8s.io/kubernetes' go.mod
    # replaces its staging modules with folders of its own tree. A throwaway module requires it
    # and replaces each of those with the published staging module of the same release.
    local bin="$PEERS_DIR/kube-apiserver-$1/bin" module stage
    [ -x "$bin/kube-apiserver" ] && return 0
    echo "peers: building kube-apiserver $1" >&2
    stage=$(mktemp -d "$PEERS_DIR/.stage-kube-apiserver.XXXXXX")
    mkdir "$stage/bin"
    module=$(mktemp -d)
    (
        cd "$module"
        gomod=$(go mod download -json "k8s.io/kubernetes@$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
        staging="v0.${1#v1.}"
        {
            printf 'module example.invalid/trust-peers\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$1"
            awk -v v="$staging" '/^replace \(/ {f = 1; next} f && /^\)/ {f = 0} f && /=> \.\/staging/ {print "\t" $1 " => " $1 " " v}' "$gomod"
            printf ')\n'
        } >go.mod
        printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >tools.go
        go mod tidy
        GOBIN="$stage/bin" GOFLAGS=-trimpath nice go install k8s.io/kubernetes/cmd/kube-apiserver
    ) >"$PEERS_DIR/kube-apiserver-$1.log" 2>&1 || {
        cat "$PEERS_DIR/kube-apiserver-$1.log" >&2
        rm -rf "$module" "$stage"
        return 1
    }
    rm -rf "$module"
    place kube-apiserver "$1" "$stage"
}

place() {  # place NAME VERSION STAGE: name the one built binary NAME, move the folder into place
    local built
    built=$(ls "$3/bin")
    [ "$built" = "$1" ] || mv "$3/bin/$built" "$3/bin/$1"
    rm -rf "$PEERS_DIR/$1-$2"  # a half-built folder of an older peers.sh
    mv -T "$3" "$PEERS_DIR/$1-$2"
}

mkdir -p "$PEERS_DIR"
command -v go >/dev/null || { echo "peers: go is not installed" >&2; exit 1; }
# In parallel: each build is mostly waiting on the module proxy at first, then on the compiler.
build crane "$CRANE" github.com/google/go-containerregistry/cmd/crane &
build_unlisted notation "$NOTATION" github.com/notaryproject/notation/cmd/notation &
build_unlisted olareg "$OLAREG" github.com/olareg/olareg/cmd/olareg &
build cosign "$COSIGN" github.com/sigstore/cosign/v3/cmd/cosign &
build fulcio "$FULCIO" github.com/sigstore/fulcio &
build rekor-tiles "$REKOR_TILES" github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix &
build timestamp-server "$TSA" github.com/sigstore/timestamp-authority/v2/cmd/timestamp-server &
build tesseract "$TESSERACT" github.com/transparency-dev/tesseract/cmd/tesseract/posix &
build_unlisted etcd "$ETCD" go.etcd.io/etcd/server/v3 &  # its go.mod has replace directives too
build_kube_apiserver "$KUBERNETES" &
failed=0
for job in $(jobs -p); do wait "$job" || failed=1; done
[ "$failed" = 0 ] || { echo "peers: a build failed" >&2; exit 1; }
for tool in cosign:$COSIGN notation:$NOTATION crane:$CRANE olareg:$OLAREG fulcio:$FULCIO \
    rekor-tiles:$REKOR_TILES timestamp-server:$TSA tesseract:$TESSERACT etcd:$ETCD \
    kube-apiserver:$KUBERNETES; do
    echo "$PEERS_DIR/${tool%%:*}-${tool#*:}/bin"
done
