#!/usr/bin/env bash
# Builds the static release binary of kube-audience-proxy and prints its path and size.
#
#   scripts/build-static.sh [TARGET]
#
# TARGET defaults to the host's own triple when the host is musl-based (Alpine, as in the
# Containerfile, for x86_64 and aarch64 alike), else to x86_64-unknown-linux-musl, whose
# standard library must then be installed (`rustup target add x86_64-unknown-linux-musl`).
# The release profile in Cargo.toml already optimises for size: LTO, one codegen unit,
# stripped symbols, abort on panic.
set -euo pipefail
cd "$(dirname "$0")/.."

host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-musl) default_target=$host ;;
  *) default_target=x86_64-unknown-linux-musl ;;
esac
target=${1:-$default_target}

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
  echo "build-static: the Rust standard library for $target is not installed;" >&2
  echo "build-static: run 'rustup target add $target' (or build in the Containerfile)" >&2
  exit 1
fi

cargo build --release --locked --target "$target" --bin kube-audience-proxy
binary=target/$target/release/kube-audience-proxy
echo "$binary $(stat -c %s "$binary") bytes"
