#!/bin/sh
# Makes the secrets docker-compose.yml mounts, as files in DIR:
# - quote.key, checkout.key, gateway.key, caller.key: a CURVE key pair per
#   service (its replicas share it), made by `zfabric keygen` inside the
#   image as the image's user (uid 65532), so each secret key is owned by
#   the user that reads it and has mode 0600, as zfabric requires;
# - servers.keys: the public keys of the seeds (quote, checkout), which a
#   node expects on its links to a seed;
# - authorized.keys: every public key, the allow-list of each node;
# - gateway-hs256: the gateway's HS256 JWT key (random, mode 0644).
# Existing files are replaced. Nothing is pulled: IMAGE is the local image.
#
# Usage: deploy/compose/keys.sh [DIR] [IMAGE]
#   DIR    where the files go (default deploy/compose/secrets)
#   IMAGE  the zfabric image (default $ZFABRIC_IMAGE, else zfabric:local)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/secrets}
image=${2:-${ZFABRIC_IMAGE:-zfabric:local}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mode=$(stat -c %a "$dir")
# The image's user writes the key pairs: the directory is writable by it
# while they are made.
chmod 0777 "$dir"
trap 'chmod "$mode" "$dir"' EXIT
for who in quote checkout gateway caller; do
    out=$(docker run --rm --network none --user 65532:65532 --read-only \
        -v "$dir:/keys" "$image" keygen --force --out "/keys/$who.key" 2>&1) ||
        { echo "$out" >&2; exit 1; }
done
chmod "$mode" "$dir"
cat "$dir/quote.key.pub" "$dir/checkout.key.pub" >"$dir/servers.keys"
cat "$dir/quote.key.pub" "$dir/checkout.key.pub" "$dir/gateway.key.pub" \
    "$dir/caller.key.pub" >"$dir/authorized.keys"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/gateway-hs256"
chmod 0644 "$dir/servers.keys" "$dir/authorized.keys" "$dir/gateway-hs256"
echo "secrets in $dir: quote, checkout, gateway, caller key pairs; servers.keys; authorized.keys; gateway-hs256"
