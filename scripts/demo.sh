#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine as root:
# a local registry, an example image pushed to it, pulled through the verified pipeline,
# signed with keys-example/, verified, and unsigned images refused.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

work=$(mktemp -d /tmp/trust-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry_pid=""
agent_pid=""
mock_pid=""
cleanup() {
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null || true
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
expect_exit() {  # expect_exit CODE command…: run, show its output, check its exit code
    local want=$1; shift
    set +e; "$@"; local got=$?; set -e
    if [ "$got" != "$want" ]; then echo "demo: expected exit $want, got $got: $*" >&2; exit 1; fi
    echo "   (exit $got, as expected)"
}

step "start a CNCF distribution registry on 127.0.0.1:$port"
cat > "$work/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
log:
  level: error
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit("demo: the registry did not start")
PY

reg="127.0.0.1:$port"
export TRUST_STORE="$work/store"

step "push an example image (busybox) and an unsigned one"
python scripts/example_image.py "$reg/demo/hello:v1"
python scripts/example_image.py "$reg/demo/unsigned:v1" --message "nobody signed me"

step "trust pull: every digest and size checked as the bytes stream in"
pinned=$(trust pull "$reg/demo/hello:v1")
echo "$pinned"
trust images

step "the store is an OCI image layout: skopeo and umoci read it as is"
skopeo inspect "oci:$TRUST_STORE:$reg/demo/hello:v1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("skopeo sees", d["Digest"], len(d["Layers"]), "layer(s)")'
umoci unpack --image "$TRUST_STORE:$reg/demo/hello:v1" "$work/bundle" >/dev/null
echo "umoci unpacked: $(cat "$work/bundle/rootfs/etc/motd")"

step "trust sign: a cosign signature over the digest (keys-example/, password trust-example)"
export TRUST_PASSWORD=trust-example
trust sign --tlog-upload=false --key keys-example/cosign.key "$reg/demo/hello:v1"   # offline demo: no public Rekor

step "trust verify: the signed image passes, the unsigned one is refused (exit 3)"
trust verify --key keys-example/cosign.pub "$reg/demo/hello:v1"
expect_exit 3 trust verify --key keys-example/cosign.pub "$reg/demo/unsigned:v1"

step "trust verify --policy: the example policy (keys-example/policy.yaml) as a CI gate"
unsigned=$(trust pull "$reg/demo/unsigned:v1")
trust policy check keys-example/policy.yaml
trust verify --policy keys-example/policy.yaml "$pinned"
expect_exit 3 trust verify --policy keys-example/policy.yaml "$unsigned"
expect_exit 3 trust verify --policy keys-example/policy.yaml "$reg/demo/hello:v1"
trust policy explain --policy keys-example/policy.yaml "$unsigned" || true

step "Notary Project: sign with an X.509 chain, verified against the example CA by the same policy"
python scripts/example_image.py "$reg/demo/notary:v1" --message "signed the Notation way"
notary=$(trust pull "$reg/demo/notary:v1")
expect_exit 3 trust verify --policy keys-example/policy.yaml "$notary"
trust sign --format notation --key keys-example/notation/release.key \
    --cert keys-example/notation/release-chain.pem "$notary"
trust verify --policy keys-example/policy.yaml "$notary"

# --- issue 16: attestations (in-toto statements: SLSA provenance, SBOMs, scans) ---
step "attestations: the policy requires SLSA provenance for demo/built (trust attest, verify-attestation, tree)"
python scripts/example_image.py "$reg/demo/built:v1" --message "built by the example CI"
built=$(trust pull "$reg/demo/built:v1")
trust sign --tlog-upload=false --key keys-example/cosign.key "$built"
expect_exit 3 trust verify --policy keys-example/policy.yaml "$built"   # signed, but not attested
trust attest --tlog-upload=false "$built" --predicate keys-example/provenance.json --type slsaprovenance1 \
    --key keys-example/cosign.key
trust verify-attestation "$built" --type slsaprovenance1 --key keys-example/cosign.pub \
    --condition 'predicate.buildDefinition.externalParameters.ref == "refs/heads/main"' >/dev/null
trust verify --policy keys-example/policy.yaml "$built"
trust tree "$built"
# --- end issue 16 ---

step "trust run: only the admitted digest runs (runc, overlayfs, namespaces)"
trust run --rm --policy keys-example/policy.yaml "$pinned"
trust run --rm --policy keys-example/policy.yaml "$pinned" /bin/sh -c 'echo "pid $$ on $(hostname)"'
expect_exit 3 trust run --rm --policy keys-example/policy.yaml "$reg/demo/hello:v1"
expect_exit 3 trust run --rm --policy keys-example/policy.yaml "$unsigned"

step "warm starts: the decision is reused (reuse-decisions: 10m); through trust agent, no Python starts for the run"
grep -c '"reused"' "$TRUST_STORE/meta/decisions.jsonl" | sed 's/^/decisions reused without asking the registry: /'
export TRUST_AGENT_SOCKET="$work/agent.sock"
trust agent 2>/dev/null &
agent_pid=$!
for _ in $(seq 100); do [ -S "$TRUST_AGENT_SOCKET" ] && break; sleep 0.05; done
trust run --rm --policy keys-example/policy.yaml "$pinned" /bin/sh -c 'echo "through the agent: pid $$"'
expect_exit 3 trust run --rm --policy keys-example/policy.yaml "$unsigned"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
unset TRUST_AGENT_SOCKET

# --- issue 18: bridge networking, published ports, exec, volumes ---
step "trust run -d -p: a verified web server on the trust0 bridge (CNI), published on 127.0.0.1"
policy=keys-example/policy.yaml
trust run -d --name web -p 127.0.0.1:0:80 --policy "$policy" "$pinned" httpd -f -p 80 -h /etc
trust port web
hostport=$(trust port web 80 | sed 's/.*://')
python3 - "$hostport" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        print("the host fetched:", urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/motd", timeout=1).read().decode().strip())
        break
    except OSError:
        time.sleep(0.05)
else:
    sys.exit("demo: the published port did not answer")
PY
address=$(trust inspect web | python3 -c 'import json, sys; print(json.load(sys.stdin)["networkSettings"]["address"])')
trust run --rm --policy "$policy" "$pinned" wget -q -O - "http://$address/motd" | sed 's/^/a second container fetched: /'
step "trust exec, cp, stats: into the running container (its namespaces, cgroup, seccomp filter)"
trust exec web ps
expect_exit 7 trust exec web sh -c 'exit 7'
trust cp web:/etc/motd "$work/motd" && sed 's/^/trust cp brought out: /' "$work/motd"
trust stats --no-stream web
# attach without a terminal: run -di keeps stdin open; what attach reads goes in, ctrl-p ctrl-q leaves
trust run -di --name echoer --network none --init --policy "$policy" "$pinned" cat >/dev/null
printf 'typed into an attached container\n' >"$work/typed"
(cat "$work/typed"; sleep 1; printf '\020\021') | trust attach echoer | sed 's/^/trust attach relayed: /'
trust rm -f echoer >/dev/null
step "a user namespace: root in the container is host uid 100000 (idmapped snapshots, nothing copied)"
trust run --rm --network none --uidmap 0:100000:65536 --policy "$policy" "$pinned" \
    sh -c 'echo "inside: uid $(id -u), uid_map: $(cat /proc/self/uid_map | tr -s " ")"'
step "volumes: a read-only bind, a tmpfs on a read-only root, no capabilities"
echo "shared from the host" > "$work/shared.txt"
trust run --rm --network none --read-only --tmpfs /tmp -v "$work:/data:ro" --cap-drop ALL --policy "$policy" \
    "$pinned" sh -c 'cat /data/shared.txt; touch /tmp/ok && echo "/tmp is writable"; touch /x 2>/dev/null || echo "/ is read-only"'
step "a named volume outlives its container; --dns and --add-host write the container's /etc files"
trust run --rm --network none -v demo-data:/data --policy "$policy" "$pinned" sh -c 'echo "written by the first container" > /data/note'
trust run --rm --network none -v demo-data:/data:ro --policy "$policy" "$pinned" cat /data/note
trust volume ls
trust volume rm demo-data
trust run --rm --dns 192.0.2.53 --add-host db:192.0.2.7 --add-host gateway:host-gateway --policy "$policy" "$pinned" \
    sh -c 'grep nameserver /etc/resolv.conf; grep -E "db|gateway" /etc/hosts'
# --privileged is a policy grant (runtime: {allow-privileged: true} on the rule); this policy has none.
expect_exit 3 trust run --rm --network none --privileged --policy "$policy" "$pinned" true
trust rm -f web
# --- end issue 18 ---

step "air-gapped: copy the signed image with its signatures into an OCI layout, verify it there"
trust copy "$pinned" "oci:$work/usb:hello"
trust verify --key keys-example/cosign.pub --ignore-reference "oci:$work/usb:hello"
skopeo inspect "oci:$work/usb:hello" | python3 -c 'import json,sys; print("skopeo reads the layout:", json.load(sys.stdin)["Digest"])'

step "trust audit: re-hash everything this host pulled and re-check it against today's policy"
# The unsigned image was pulled when it was evaluated (and refused): audit reports it, exit 3.
expect_exit 3 trust audit --policy keys-example/policy.yaml

# --- issue 19: keys that never leave an HSM (PKCS#11, SoftHSM2 here) ---
step "an HSM key (SoftHSM2 token): trust keygen --pkcs11, sign, verify with the exported public key"
mkdir -p "$work/softhsm"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/softhsm" > "$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
softhsm2-util --init-token --free --label demo --so-pin 5678 --pin 1234 >/dev/null
hsm_key="pkcs11:token=demo;object=release?module-path=/usr/lib/softhsm/libsofthsm2.so"
python scripts/example_image.py "$reg/demo/hsm:v1" --message "signed by a key on a token"
TRUST_PKCS11_PIN=1234 trust keygen --pkcs11 "$hsm_key" > "$work/hsm.pub"
cat "$work/hsm.pub"
expect_exit 2 env TRUST_PKCS11_PIN=0000 trust sign --tlog-upload=false --key "$hsm_key" "$reg/demo/hsm:v1"
TRUST_PKCS11_PIN=1234 trust sign --tlog-upload=false --key "$hsm_key" "$reg/demo/hsm:v1"
trust verify --key "$work/hsm.pub" "$reg/demo/hsm:v1"
unset SOFTHSM2_CONF
# --- end issue 19 ---

# --- issue 17: the same policy as a Kubernetes admission webhook ---
step "trust webhook: the same policy answers Kubernetes AdmissionReviews (offline, then over TLS)"
review_of() {  # review_of IMAGE: a Pod wrapped as the API server sends it to a webhook
    python3 -c 'import json,sys; print(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
      "request": {"uid": "demo-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "shop",
      "operation": "CREATE", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
      "spec": {"containers": [{"name": "web", "image": sys.argv[1]}]}}}}))' "$1"
}
review_of "$pinned" > "$work/review-signed.json"
review_of "$unsigned" > "$work/review-unsigned.json"
review_of "$reg/demo/hello:v1" > "$work/review-tag.json"
trust webhook review "$work/review-signed.json" --policy keys-example/policy.yaml | python3 -c 'import json,sys; print("allowed:", json.load(sys.stdin)["response"]["allowed"])'
expect_exit 3 trust webhook review "$work/review-unsigned.json" --policy keys-example/policy.yaml >/dev/null
trust webhook review "$work/review-tag.json" --policy keys-example/policy.yaml --mutate \
  | python3 -c 'import base64,json,sys; print("mutate pins the tag:", json.loads(base64.b64decode(json.load(sys.stdin)["response"]["patch"]))[0]["value"])'
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/webhook.key" -out "$work/webhook.crt" 2>/dev/null
hook_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trust webhook serve --policy keys-example/policy.yaml --tls-cert "$work/webhook.crt" --tls-key "$work/webhook.key" \
  --listen "127.0.0.1:$hook_port" --workers 1 > "$work/webhook.log" 2>&1 &
hook_pid=$!
for _ in $(seq 100); do curl -sf --cacert "$work/webhook.crt" "https://127.0.0.1:$hook_port/healthz" >/dev/null && break; sleep 0.1; done
curl -s --cacert "$work/webhook.crt" -H 'content-type: application/json' --data-binary @"$work/review-unsigned.json" \
  "https://127.0.0.1:$hook_port/validate" | python3 -c 'import json,sys; r=json.load(sys.stdin)["response"]; print("over TLS:", "allowed" if r["allowed"] else "denied:", r.get("status",{}).get("message",""))'
curl -s --cacert "$work/webhook.crt" "https://127.0.0.1:$hook_port/metrics" | grep '^trust_webhook_requests_total'
kill "$hook_pid"; wait "$hook_pid" 2>/dev/null || true
# --- end issue 17 ---

# --- issue 15 ---
step "Sigstore, offline: a local Fulcio + Rekor + TSA (@sigstore/mock), keyless and key signing, verify-blob"
mock_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd .cache/sigstore-mock && exec node mock_server.js "$mock_port" "$work/sigstore") >"$work/sigstore.log" 2>&1 &
mock_pid=$!
for _ in $(seq 100); do [ -f "$work/sigstore/trust_config.json" ] && grep -q listening "$work/sigstore.log" && break; sleep 0.1; done
token=$(python3 .cache/sigstore-mock/mktoken.py dev@example.test)
echo "release notes" > "$work/notes.txt"
trust sign-blob "$work/notes.txt" --keyless --identity-token "$token" --trust-config "$work/sigstore/trust_config.json" \
  --bundle "$work/notes.sigstore.json"
trust verify-blob "$work/notes.txt" --bundle "$work/notes.sigstore.json" --trusted-root "$work/sigstore/trusted_root.json" \
  --certificate-identity dev@example.test --certificate-oidc-issuer https://issuer.mock.test
expect_exit 3 trust verify-blob "$work/notes.txt" --bundle "$work/notes.sigstore.json" \
  --certificate-identity dev@example.test --certificate-oidc-issuer https://issuer.mock.test   # public-good root
trust sign --key keys-example/cosign.key --trust-config "$work/sigstore/trust_config.json" "$reg/demo/hello:v1"
trust verify --key keys-example/cosign.pub --trusted-root "$work/sigstore/trusted_root.json" "$reg/demo/hello:v1"
# an attestation with a key is logged too; --trusted-root makes verify-attestation require the entry
trust attest "$reg/demo/hello:v1" --predicate keys-example/provenance.json --type slsaprovenance1 \
  --key keys-example/cosign.key --trust-config "$work/sigstore/trust_config.json" --format bundle
trust verify-attestation "$reg/demo/hello:v1" --type slsaprovenance1 --key keys-example/cosign.pub \
  --trusted-root "$work/sigstore/trusted_root.json" >/dev/null
kill "$mock_pid"; wait "$mock_pid" 2>/dev/null || true
# --- end issue 15 ---

# --- issue 13: registry configuration as podman and docker users have it (docs/registries.md) ---
step "registries.conf: a blocked registry's image served by a mirror, by digest; its tags refused (exit 3)"
cat > "$work/registries.conf" <<TOML
[[registry]]
location = "blocked.example"
blocked = true

[[registry.mirror]]
location = "$reg"
pull-from-mirror = "digest-only"
TOML
trust --registries-conf "$work/registries.conf" pull "blocked.example/demo/hello@${pinned#*@}"
expect_exit 3 trust --registries-conf "$work/registries.conf" pull "blocked.example/demo/hello:v1"
# --- end issue 13 ---

# --- issue 20: bounded under a hostile image, calm on a sick host ---
step "limits: a signed image may still be a bomb; the rule's limits: cap what unpacking it may cost"
cat > "$work/limits.yaml" <<YAML
version: 1
rules:
  - scope: $reg/demo
    insecure-accept-anything: true
    limits: {max-layers: 128, max-unpacked-bytes: 68719476736, max-files: 5}
default: {reject: true}
YAML
expect_exit 4 trust run --rm --store "$work/store-limits" --policy "$work/limits.yaml" "$pinned" true
expect_exit 2 trust pull --store "$work/a:b" "$pinned"   # overlay could never mount it: refused first
trust gc -o json | python3 -c 'import json,sys; print("lock files gc removed:", json.load(sys.stdin)["staleLocks"])'
trust --request-deadline 10m --min-rate 50k pull "$pinned"   # a slow registry: stop at 10 min or below 50 kB/s
# --- end issue 20 ---

step "a malformed reference is a usage error"
expect_exit 2 trust pull "$reg/Demo/Hello:v1"

step "done"
