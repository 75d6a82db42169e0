#!/bin/sh
# Builds the zfabric image from the host's release binary without pulling
# anything: stages the binary, every library `ldd` lists, and a minimal
# /etc/passwd and /etc/group (user `zfabric`, uid/gid 65532) into a
# temporary context, then `docker build --pull=false`.
#
# Usage: deploy/image/build.sh [TAG] [BINARY]
#   TAG     image tag (default zfabric:local)
#   BINARY  the zfabric binary (default target/release/zfabric; built with
#           `cargo build --release` when missing)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tag=${1:-zfabric:local}
bin=${2:-$root/target/release/zfabric}
if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --release --bin zfabric)
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
fs=$ctx/rootfs
mkdir -p "$fs/usr/local/bin" "$fs/etc" "$fs/tmp" "$fs/data"
cp "$bin" "$fs/usr/local/bin/zfabric"
# The dynamic loader and every shared library the binary links, at the
# paths the binary asks for them.
ldd "$bin" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' |
while read -r lib; do
    mkdir -p "$fs$(dirname "$lib")"
    cp -L "$lib" "$fs$lib"
done
printf 'root:x:0:0:root:/:/sbin/nologin\nzfabric:x:65532:65532:zfabric:/data:/sbin/nologin\n' >"$fs/etc/passwd"
printf 'root:x:0:\nzfabric:x:65532:\n' >"$fs/etc/group"
cp "$here/Dockerfile" "$ctx/Dockerfile"
# Ownership inside the image: numeric ids, written by the build.
chmod 1777 "$fs/tmp"
chmod 0777 "$fs/data"
docker build --pull=false -q -t "$tag" "$ctx"
