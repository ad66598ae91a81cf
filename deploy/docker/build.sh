#!/usr/bin/env bash
# Builds the `intake:local` image: a static `intake` (glibc, crt-static) from
# this checkout, then `FROM scratch` around it (deploy/docker/Dockerfile).
#
#   deploy/docker/build.sh              # tags intake:local, prints its size
#   IMAGE=intake:test deploy/docker/build.sh
#   INTAKE_IMAGE_PROFILE=ci-image deploy/docker/build.sh   # CI's quicker build
#
# The binary lands in $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/;
# release profile, without debug info and stripped (the image's size).
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-intake:local}
TARGET=x86_64-unknown-linux-gnu
# The explicit --target keeps crt-static off build scripts and proc macros,
# which cannot be static; it also keeps this build apart from the host's.
# INTAKE_IMAGE_PROFILE=ci-image: CI's quicker build (Cargo.toml says why).
PROFILE=${INTAKE_IMAGE_PROFILE:-release}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo build -q --profile "$PROFILE" --locked --target "$TARGET" -p intake --bin intake
BIN=${CARGO_TARGET_DIR:-target}/$TARGET/$PROFILE/intake

# A dynamic binary would fail in the image with a bare "no such file".
if ! file "$BIN" | grep -Eq 'statically linked|static-pie linked'; then
  echo "$BIN is not statically linked: $(file -b "$BIN")" >&2
  exit 1
fi

CTX=$(mktemp -d /tmp/intake-image.XXXXXX)
trap 'rm -rf "$CTX"' EXIT
cp deploy/docker/Dockerfile "$CTX/"
cp -r deploy/docker/rootfs "$CTX/rootfs"
mkdir "$CTX/data"
cp "$BIN" "$CTX/intake"
docker build -q -t "$IMAGE" "$CTX" >/dev/null
echo "image=$IMAGE size_bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE") binary_bytes=$(stat -c %s "$BIN")"
