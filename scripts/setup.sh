#!/usr/bin/env bash
# Installs what ferry's build and tests need, from Debian's packages. Safe to run repeatedly:
# it asks apt only when something is missing.
set -euo pipefail
pkgs=(build-essential clang libclang-rt-14-dev llvm libcmocka-dev libzydis-dev binutils pkg-config
      busybox-static file liblzma-dev zlib1g-dev cpio qemu-utils acpica-tools
      clang-format clang-tidy cppcheck util-linux libslirp-dev iproute2)
[ "${1:-}" = "--bench" ] && pkgs+=(qemu-system-x86 qemu-user time bc)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "setup: missing packages: ${missing[*]} (run as root, or install them)" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
