#!/usr/bin/env bash
# Creates the Secrets of deploy/overlays/local in $NAMESPACE with generated
# passwords (see deploy/README.md, "Secrets"). Called by `make local-secrets`.
# Passwords are kept in $OUT so re-running reuses them; existing Secrets are
# updated in place (kubectl apply), so this is safe to repeat.
set -euo pipefail

: "${NAMESPACE:?set NAMESPACE}"
KUBECTL=${KUBECTL:-kubectl}
GO=${GO:-go}
OUT=${OUT:-bin/local-secrets}

umask 077
mkdir -p "$OUT"

# secret NAME: a random value kept in $OUT/NAME.
secret() {
  local f="$OUT/$1"
  if [ ! -s "$f" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f"
  fi
  cat "$f"
}

admin_pw=$(secret admin-password)
prune_pw=$(secret prune-password)
secret http-secret > /dev/null
secret redis-password > /dev/null

# Hashes are made by berth itself, so the file is what its loader accepts.
"$GO" build -o "$OUT/berth" ./cmd/berth
berth() { "$OUT/berth" "$@"; }
{
  printf '%s' "$admin_pw" | berth htpasswd admin --password-stdin
  printf '%s' "$prune_pw" | berth htpasswd prune --password-stdin
} > "$OUT/htpasswd"

if ! $KUBECTL get namespace "$NAMESPACE" >/dev/null 2>&1; then
  $KUBECTL create namespace "$NAMESPACE"
fi
apply() { $KUBECTL -n "$NAMESPACE" create secret generic "$@" --dry-run=client -o yaml | $KUBECTL -n "$NAMESPACE" apply -f -; }
apply berth-htpasswd --from-file=htpasswd="$OUT/htpasswd"
# --from-file keeps the values out of process listings.
apply berth-http-secret --from-file=secret="$OUT/http-secret"
apply berth-redis --from-file=password="$OUT/redis-password"
apply berth-prune-credentials --from-literal=username=prune --from-file=password="$OUT/prune-password"

echo "Secrets ready in namespace $NAMESPACE; docker login with user admin, password in $OUT/admin-password"
