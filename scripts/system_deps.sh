#!/usr/bin/env bash
# System packages the simulators need, installed only when missing (called by `make apt`, which
# `make test` runs):
#   ManiSkill3 / SAPIEN need a Vulkan device even for state observations. Debian bookworm's Mesa
#   (22.3) lavapipe is rejected by SAPIEN; Mesa 25 from bookworm-backports works (CPU software Vulkan).
#   LIBERO / MuJoCo render offscreen through EGL (libegl1, libgl1) or OSMesa (libosmesa6).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo -n"; else
    echo "system_deps: not root and no sudo; install by hand: mesa-vulkan-drivers (bookworm-backports) libvulkan1 libegl1 libgl1 libosmesa6" >&2
    exit 0
  fi
fi
PACKAGES="libvulkan1 libegl1 libgl1 libosmesa6 libglu1-mesa"
missing=""
for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
codename=$( . /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
need_backports=0
if [ "$codename" = bookworm ]; then
  # SAPIEN needs Mesa >= 23 for lavapipe; bookworm's own is 22.3.
  ver=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  case "$ver" in ""|22.*) need_backports=1 ;; esac
  if [ $need_backports = 1 ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/rlinf-backports.list >/dev/null
  fi
elif ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  missing="$missing mesa-vulkan-drivers"
fi
if [ -z "$missing" ] && [ $need_backports = 0 ]; then exit 0; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
[ -n "$missing" ] && $SUDO apt-get install -y -qq --no-install-recommends $missing
if [ $need_backports = 1 ]; then
  $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers
fi
