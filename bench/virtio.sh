#!/usr/bin/env bash
# virtio device throughput: ferry's soft engine against QEMU TCG, the same Debian kernel (bzImage)
# and busybox initramfs (scripts/fetch-linux.sh) on both, side by side in one run.
#   disk      /init's ferry.run=disk: a sequential O_DIRECT write (flushed) then read of /dev/vda,
#             bs=1M, timed inside the guest by its monotonic clock; a virtio-blk PCI device on a
#             raw image (made with truncate) and on a qcow2 image (qemu-img create), each fresh
#             for every run. QEMU has -M pc with a modern-only virtio-blk-pci on its default cache
#             mode (writeback: both engines go through the host's page cache, and both fdatasync
#             on the guest's flush).
# Runs alternate between the engines so that a busy host's drift hits both alike. Prints MiB/s
# from the medians of BENCH_RUNS runs and the ratios ferry/qemu of the times (lower is better for
# ferry). After each of ferry's qcow2 runs the image must pass `qemu-img check`.
#
# Usage: bench/virtio.sh [FERRY_BINARY]     (default build/ferry)
# Env:   BENCH_RUNS (default 3), BENCH_DISK_MB (default 128), BENCH_TIMEOUT (seconds per VM,
#        default 300), QEMU_SYSTEM (default qemu-system-x86_64), QEMU_IMG (default qemu-img),
#        FERRY_CACHE (as scripts/fetch-linux.sh)
set -u
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
FERRY_ARG=${1:-$ROOT/build/ferry}
if [ $# -gt 1 ] || [ ! -x "$FERRY_ARG" ]; then
	echo "usage: $0 [FERRY_BINARY]   (build it with: make)" >&2
	exit 2
fi
FERRY=$(cd "$(dirname "$FERRY_ARG")" && pwd)/$(basename "$FERRY_ARG")
RUNS=${BENCH_RUNS:-3}
MB=${BENCH_DISK_MB:-128}
TMO=${BENCH_TIMEOUT:-300}
QEMU=${QEMU_SYSTEM:-qemu-system-x86_64}
QIMG=${QEMU_IMG:-qemu-img}
case $MB in
'' | 0* | *[!0-9]*)
	echo "bench-virtio: BENCH_DISK_MB must be a positive number of MiB" >&2
	exit 2
	;;
esac

"$ROOT/scripts/fetch-linux.sh" >/dev/null || exit 1
L=${FERRY_CACHE:-/var/cache/ferry}/linux
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-virtio.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# QEMU, and qemu-img for the qcow2 images (Debian's qemu-utils; also what `check` needs).
have() { command -v "$1" >/dev/null 2>&1; }
find_tool() { # command default-command package: installs the package for the default as root
	have "$1" && return 0
	{ [ "$1" = "$2" ] && [ "$(id -u)" = 0 ]; } || return 1
	echo "bench-virtio: installing $3" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$3" >/dev/null 2>&1
	have "$1"
}
HAVE_QEMU=1 HAVE_QIMG=1
find_tool "$QEMU" qemu-system-x86_64 qemu-system-x86 || HAVE_QEMU=0
find_tool "$QIMG" qemu-img qemu-utils || HAVE_QIMG=0
FORMATS="raw"
[ $HAVE_QIMG = 1 ] && FORMATS="raw qcow2"
ENGINES="ferry"
[ $HAVE_QEMU = 1 ] && ENGINES="ferry qemu"

APPEND="console=ttyS0 quiet ferry.run=disk ferry.disk_mb=$MB"
IMG=$TMP/disk.img
# Both drive syntaxes take ',,' for a comma in the path.
DRIVE=${IMG//,/,,}

make_image() { # format
	rm -f "$IMG"
	if [ "$1" = qcow2 ]; then
		"$QIMG" create -q -f qcow2 "$IMG" "${MB}M"
	else
		truncate -s "${MB}M" "$IMG"
	fi
}
# The VM command line for one engine and image format, into CMD.
vm_cmd() { # engine format
	if [ "$1" = ferry ]; then
		CMD=("$FERRY" run --engine soft --serial stdio -m 256M --kernel "$L/vmlinuz"
			--initrd "$L/initramfs.cpio.gz" --append "$APPEND" --drive "file=$DRIVE,format=$2")
	else
		CMD=("$QEMU" -M pc -accel tcg -m 256M -nodefaults -no-user-config -nographic
			-serial stdio -no-reboot -kernel "$L/vmlinuz" -initrd "$L/initramfs.cpio.gz"
			-append "$APPEND" -drive "file=$DRIVE,format=$2,if=none,id=d0"
			-device "virtio-blk-pci,drive=d0,disable-legacy=on")
	fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'; }

# T[engine.format.op]: the guest's times (s) of every run that reported one, a line each.
declare -A T
QCOW2_OK=yes MISSING=0
echo "bench-virtio: $(cat "$L/version"), virtio-blk on a $MB MiB image, $RUNS runs each, medians"
for ((i = 0; i < RUNS; i++)); do
	for fmt in $FORMATS; do
		for eng in $ENGINES; do
			make_image "$fmt" || { echo "bench-virtio: cannot make a $fmt image" >&2; exit 1; }
			vm_cmd "$eng" "$fmt"
			timeout -k 5 "$TMO" "${CMD[@]}" </dev/null 2>&1 | tr -d '\r' >"$TMP/console"
			rc=${PIPESTATUS[0]}
			for op in write read; do
				t=$(sed -n "s/^.*ferry-bench: disk $op $MB MiB in \([0-9.]*\) s\$/\1/p" "$TMP/console")
				if [ -n "$t" ]; then
					T[$eng.$fmt.$op]+="$t"$'\n'
				else
					MISSING=1
					echo "bench-virtio: $eng on $fmt, run $((i + 1)): no disk $op figure" \
						"(exit status $rc); the console's end:" >&2
					tail -n 5 "$TMP/console" | sed 's/^/    /' >&2
				fi
			done
			if [ "$eng" = ferry ] && [ "$fmt" = qcow2 ] &&
				! "$QIMG" check -q "$IMG" >"$TMP/check" 2>&1; then
				QCOW2_OK=no
				echo "bench-virtio: WARNING: the qcow2 image fails 'qemu-img check' after" \
					"ferry's run $((i + 1)):" >&2
				sed 's/^/    /' "$TMP/check" >&2
			fi
		done
	done
done

# MiB/s from a median time, and the ratio of two (n/a when no run reported a time).
pos() { [ "$(echo "$1 > 0" | bc -l)" = 1 ]; }
rate() { pos "$1" && printf '%.1f' "$(echo "$MB / $1" | bc -l)" || echo n/a; }
ratio() { pos "$1" && pos "$2" && printf '%.2f' "$(echo "$1 / $2" | bc -l)" || echo n/a; }
echo
printf '%-26s %12s %12s %12s\n' "" "ferry" "qemu-tcg" "ferry/qemu"
for fmt in $FORMATS; do
	for op in write read; do
		f=$(printf '%s' "${T[ferry.$fmt.$op]:-}" | median)
		q=$(printf '%s' "${T[qemu.$fmt.$op]:-}" | median)
		printf '%-26s %12s %12s %12s\n' "$fmt $op (MiB/s)" "$(rate "$f")" "$(rate "$q")" \
			"$(ratio "$f" "$q")"
	done
done
echo "MiB/s of O_DIRECT 1 MiB requests timed in the guest; ferry/qemu is the ratio of the times"
echo "(below 1: ferry is faster). Reads come from the host's page cache, so they measure each"
echo "engine's request path and its emulated CPU; writes end with the flush's fdatasync, so they"
echo "also include the host's disk."
[ $HAVE_QIMG = 1 ] && echo "qcow2 images after ferry's runs pass 'qemu-img check': $QCOW2_OK"
[ $HAVE_QIMG = 1 ] || echo "$QIMG is not installed: no qcow2 figures (scripts/setup.sh --bench)"
[ $HAVE_QEMU = 1 ] || echo "$QEMU is not installed: no ratios (scripts/setup.sh --bench)"

# The TCP throughput section (virtio-net) goes here, once virtio-net lands: its runs, and its
# rows printed in the table's format above.

# A run without figures or a damaged qcow2 image fails the benchmark.
[ $MISSING = 0 ] && [ $QCOW2_OK = yes ]
