#!/usr/bin/env bash
# Fetches Debian 12's stock kernel (the linux-image-6.1.0-*-amd64 that linux-image-amd64 depends
# on) and busybox-static with apt-get download, and builds the test initramfs around
# tests/guests/linux/init. Everything goes to a cache outside the repository, so a fresh clone
# (in CI) reuses it:
#   ${FERRY_CACHE:-/var/cache/ferry}/linux/
#     vmlinuz             the kernel's bzImage
#     initramfs.cpio.gz   busybox + applet links, /init, /dev/console, the virtio and ext4
#                         modules in /lib/modules (newc cpio, gzip)
#     version             the kernel release (uname -r)
#     config              the kernel's build configuration
#     lib/modules/<ver>/  the kernel package's modules (the few /init loads are copied in)
# Idempotent: the kernel is downloaded once (delete the directory to take a newer one); the
# initramfs is rebuilt when /init or the benchmark workload differ from the copies used last time.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
init_src=$repo/tests/guests/linux/init
work_src=$repo/tests/guests/linux/bench-work.sh
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
virtio-rng virtio_console failover net_failover virtio_net crc16 mbcache jbd2 crc32c_generic ext4"
modules=$(echo $modules)
out=${FERRY_CACHE:-/var/cache/ferry}/linux
tmp=

die() {
	echo "fetch-linux: $*" >&2
	exit 1
}
cleanup() {
	[ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT

for tool in apt-get apt-cache dpkg-deb cpio gzip; do
	command -v "$tool" >/dev/null || die "$tool is missing (run scripts/setup.sh)"
done
[ -f "$init_src" ] || die "$init_src is missing"
[ -f "$work_src" ] || die "$work_src is missing"

have_kernel() {
	[ -s "$out/vmlinuz" ] && [ -s "$out/version" ] && [ -d "$out/lib/modules/$(cat "$out/version")" ]
}
initramfs_current() {
	[ -s "$out/initramfs.cpio.gz" ] || return 1
	# A fresh clone dates every file at checkout: unchanged sources still count as current.
	cmp -s "$out/init" "$init_src" && cmp -s "$out/bench-work.sh" "$work_src" &&
		[ "$(cat "$out/modules" 2>/dev/null)" = "$modules" ]
}
report() {
	echo "kernel:    $out/vmlinuz ($(cat "$out/version"))"
	echo "initramfs: $out/initramfs.cpio.gz"
	echo "modules:   $out/lib/modules/$(cat "$out/version")"
}

if have_kernel && initramfs_current; then
	echo "fetch-linux: up to date"
	report
	exit 0
fi

mkdir -p "$out" 2>/dev/null || die "cannot create $out (set FERRY_CACHE to a writable directory)"
[ -w "$out" ] || die "$out is not writable (set FERRY_CACHE to a writable directory)"
tmp=$(mktemp -d "$out/.tmp.XXXXXX")
chmod 755 "$tmp" # apt's _apt user downloads into it when run as root

# Runs an apt command with its output in $tmp/apt.out; if it fails because the package lists
# are missing or stale, refreshes them once (as root) and runs it again.
updated=0
apt_retry() {
	local log=$tmp/apt.log
	"$@" >"$tmp/apt.out" 2>"$log" && return 0
	if [ $updated = 0 ] &&
		grep -qE "Unable to locate|No packages found|no installation candidate|Can't select|Failed to fetch" "$log"; then
		[ "$(id -u)" = 0 ] || die "apt package lists are missing or stale; run 'apt-get update' as root"
		echo "fetch-linux: refreshing apt package lists" >&2
		apt-get update -qq >/dev/null 2>"$log" || die "apt-get update failed: $(grep -m1 . "$log")"
		updated=1
		"$@" >"$tmp/apt.out" 2>"$log" && return 0
	fi
	die "'$*' failed: $(grep -m1 . "$log" || echo "no message")"
}

# Downloads one package into $tmp and extracts it to $tmp/$2.
fetch_deb() { # package directory
	pushd "$tmp" >/dev/null
	apt_retry apt-get download -q "$1"
	popd >/dev/null
	local debs=("$tmp/${1}_"*.deb) deb
	deb=${debs[0]}
	[ -f "$deb" ] || die "apt-get download left no $1 package"
	dpkg-deb -x "$deb" "$tmp/$2" || die "cannot extract $deb"
	rm -f "$deb"
}

extract_kernel() {
	apt_retry apt-cache depends linux-image-amd64
	local pkg
	pkg=$(sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' "$tmp/apt.out" | head -n1)
	[ -n "$pkg" ] ||
		die "linux-image-amd64 does not depend on a linux-image-6.1.0-*-amd64 (not a Debian 12 host?)"
	echo "fetch-linux: downloading $pkg"
	fetch_deb "$pkg" kernel
	local ver=${pkg#linux-image-} k=$tmp/kernel
	[ -s "$k/boot/vmlinuz-$ver" ] || die "$pkg holds no boot/vmlinuz-$ver"
	[ -d "$k/lib/modules/$ver" ] || die "$pkg holds no lib/modules/$ver"
	rm -rf "${out:?}/lib" "$out/vmlinuz" "$out/version"
	mv "$k/lib" "$out/lib"
	cp "$k/boot/config-$ver" "$out/config"
	mv "$k/boot/vmlinuz-$ver" "$out/vmlinuz"
	echo "$ver" >"$out/version" # last: its presence marks a complete kernel
}

# One newc cpio entry with no data (a device node or a directory), then the archive trailer:
# it lets the initramfs hold /dev/console without mknod, so no root is needed.
newc_entry() { # name mode(octal) rdevmajor rdevminor
	local name=$1 mode=$(($2)) namesize=$((${#1} + 1))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
		0 "$mode" 0 0 1 0 0 0 0 "$3" "$4" "$namesize" 0 "$name"
	local pad=$(((4 - (110 + namesize) % 4) % 4))
	[ $pad = 0 ] || head -c "$pad" /dev/zero
}

build_initramfs() {
	echo "fetch-linux: downloading busybox-static"
	fetch_deb busybox-static bb
	local bb=$tmp/bb/bin/busybox root=$tmp/root
	[ -x "$bb" ] || die "busybox-static holds no bin/busybox"
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,etc}
	cp "$bb" "$root/bin/busybox"
	cp "$init_src" "$root/init"
	cp "$work_src" "$root/bench-work.sh"
	chmod 755 "$root/init" "$root/bin/busybox"
	chmod 1777 "$root/tmp"
	local applet
	for applet in $("$bb" --list-full); do
		case $applet in
		bin/busybox | linuxrc) continue ;;
		esac
		[ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
	done
	# The kernel's virtio drivers and ext4 are modules: /init loads these, in this order
	# (each after the modules it depends on), from /lib/modules.
	mkdir -p "$root/lib/modules"
	local mod path mods=$out/lib/modules/$(cat "$out/version")/kernel
	for mod in $modules; do
		path=$(find "$mods" -name "$mod.ko" -print -quit)
		[ -n "$path" ] || die "the kernel package has no module $mod.ko"
		cp "$path" "$root/lib/modules/"
	done
	echo "$modules" >"$root/lib/modules/order"
	local need
	for need in bin/sh sbin/poweroff usr/bin/setsid bin/cttyhack bin/mount; do
		[ -L "$root/$need" ] || die "busybox lacks the applet $need that /init needs"
	done
	{
		(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) ||
			die "cpio failed"
		newc_entry dev/console 020600 5 1
		newc_entry TRAILER!!! 0 0 0
	} | gzip -9 -n >"$tmp/initramfs.cpio.gz"
	mv "$tmp/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
	cp "$init_src" "$out/init"
	cp "$work_src" "$out/bench-work.sh"
	echo "$modules" >"$out/modules"
}

have_kernel || extract_kernel
initramfs_current || build_initramfs
report
