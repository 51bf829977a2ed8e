#!/usr/bin/env bash
# Installs what pyisolate builds and runs with: Debian's libzmq, czmq,
# msgpack-c, DLPack headers, a C toolchain with clang's libFuzzer, CMake,
# and iproute2 (`ip netns`: the remote tests across network namespaces).
# Idempotent: packages already present are not fetched again.
set -euo pipefail
packages=(build-essential pkg-config cmake ninja-build libzmq3-dev libczmq-dev libmsgpack-dev
          libdlpack-dev clang-14 libclang-rt-14-dev iproute2)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
