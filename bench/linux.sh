#!/usr/bin/env bash
# Debian's Linux 6.1 + busybox initramfs (scripts/fetch-linux.sh) on ferry's soft engine against
# QEMU TCG in its fastest set-up for the same kernel and initramfs (-M microvm with the
# uncompressed vmlinux), side by side in one run:
#   boot      wall time from process start to the first line /init prints, and to the process's
#             exit after /init powers off at once (ferry.run=poweroff)
#   work      the busybox workload of tests/guests/linux/bench-work.sh inside the guest
#             (ferry.run=work), timed between the lines /init prints around it, and the same
#             script run natively by the host's busybox-static; the outputs must match
# ferry boots the same vmlinux as QEMU (PVH entry; this is what the target compares), and the
# bzImage two ways: --linux-entry direct (its XZ payload decompressed on the host, the default)
# and decompressor (the kernel's own XZ decompressor on the soft CPU). Also the host CPU an idle
# guest costs (ferry at the busybox prompt, sampled over BENCH_IDLE seconds).
# Prints the medians of BENCH_RUNS runs and the ratios ferry/qemu (lower is better for ferry)
# against the target: no slower than 2x QEMU TCG.
#
# Usage: bench/linux.sh [FERRY_BINARY]     (default build/ferry)
# Env:   BENCH_RUNS (default 3), BENCH_IDLE (seconds, default 5), BENCH_TIMEOUT (default 300),
#        QEMU_SYSTEM (default qemu-system-x86_64), FERRY_CACHE (as scripts/fetch-linux.sh)
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
IDLE=${BENCH_IDLE:-5}
TMO=${BENCH_TIMEOUT:-300}
QEMU=${QEMU_SYSTEM:-qemu-system-x86_64}
BB=/bin/busybox

"$ROOT/scripts/fetch-linux.sh" >/dev/null || exit 1
L=${FERRY_CACHE:-/var/cache/ferry}/linux
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-linux.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# The uncompressed kernel for QEMU (its -kernel takes a PVH ELF): the bzImage's XZ payload.
if [ ! -s "$L/vmlinux" ]; then
	python3 - "$L/vmlinuz" "$L/vmlinux.tmp" <<'EOF' || { echo "bench-linux: cannot extract vmlinux" >&2; exit 1; }
import lzma, struct, sys
img = open(sys.argv[1], 'rb').read()
setup = (img[0x1f1] or 4) + 1
off, length = struct.unpack_from('<II', img, 0x248)
start = setup * 512 + off
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor().decompress(img[start:start + length]))
EOF
	mv "$L/vmlinux.tmp" "$L/vmlinux"
fi

HAVE_QEMU=1
if ! command -v "$QEMU" >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && [ "$QEMU" = qemu-system-x86_64 ]; then
		echo "bench-linux: installing qemu-system-x86" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null 2>&1
	fi
	command -v "$QEMU" >/dev/null 2>&1 || HAVE_QEMU=0
fi

# Runs one VM with its console on a pipe and writes "t_init t_work_begin t_work_end t_exit" (in
# seconds from the start; 0 when the line never came) to $TMP/times, the console to $TMP/console.
timed() {
	: >"$TMP/console"
	local t0=$EPOCHREALTIME ti=0 tb=0 te=0 line now
	while IFS= read -r line; do
		now=$EPOCHREALTIME
		printf '%s\n' "$line" >>"$TMP/console"
		case $line in
		*"ferry-init: up"*) [ "$ti" = 0 ] && ti=$(echo "$now - $t0" | bc -l) ;;
		*"ferry-init: work begins"*) tb=$(echo "$now - $t0" | bc -l) ;;
		*"ferry-init: work ends"*) te=$(echo "$now - $t0" | bc -l) ;;
		esac
	done < <(timeout -k 5 "$TMO" "$@" </dev/null 2>&1)
	local tx
	tx=$(echo "$EPOCHREALTIME - $t0" | bc -l)
	echo "$ti $tb $te $tx" >"$TMP/times"
}

run_ferry() { # entry ferry.run
	local kernel=$L/vmlinuz entry=(--linux-entry "$1")
	# "pvh": the uncompressed vmlinux through its PVH entry, as QEMU is given it.
	[ "$1" = pvh ] && kernel=$L/vmlinux entry=()
	timed "$FERRY" run --engine soft --serial stdio "${entry[@]}" -m 256M \
		--kernel "$kernel" --initrd "$L/initramfs.cpio.gz" \
		--append "console=ttyS0 quiet ferry.run=$2"
}
run_qemu() { # ferry.run
	timed "$QEMU" -M microvm -accel tcg -m 256M -nodefaults -no-user-config -nographic \
		-serial stdio -no-reboot -kernel "$L/vmlinux" -initrd "$L/initramfs.cpio.gz" \
		-append "console=ttyS0 quiet ferry.run=$1"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'; }

# measure NAME FIELD COMMAND...: the median of field FIELD (1 init, 2-3 work, 4 exit) over RUNS.
declare -A R
measure() {
	local name=$1; shift
	local i init=() exit=() work=()
	for ((i = 0; i < RUNS; i++)); do
		"$@"
		read -r ti tb te tx <"$TMP/times"
		init+=("$ti") exit+=("$tx")
		[ "$tb" != 0 ] && [ "$te" != 0 ] && work+=("$(echo "$te - $tb" | bc -l)")
		cp "$TMP/console" "$TMP/console.$name"
	done
	R[$name.init]=$(printf '%s\n' "${init[@]}" | median)
	R[$name.exit]=$(printf '%s\n' "${exit[@]}" | median)
	R[$name.work]=$( [ ${#work[@]} -gt 0 ] && printf '%s\n' "${work[@]}" | median || echo 0)
}

echo "bench-linux: $(cat "$L/version"), $RUNS runs each, medians"
measure ferry-pvh run_ferry pvh poweroff
measure ferry-direct run_ferry direct poweroff
measure ferry-decomp run_ferry decompressor poweroff
measure ferry-work run_ferry pvh work
[ $HAVE_QEMU = 1 ] && measure qemu run_qemu poweroff && measure qemu-work run_qemu work

# The same workload natively, with busybox's applets first in PATH.
mkdir -p "$TMP/bin"
for a in seq md5sum sha256sum gzip gunzip sort awk sh; do ln -sf "$BB" "$TMP/bin/$a"; done
nat=()
for ((i = 0; i < RUNS; i++)); do
	t0=$EPOCHREALTIME
	(cd "$TMP" && PATH=$TMP/bin "$BB" sh "$ROOT/tests/guests/linux/bench-work.sh" >"$TMP/native.out" 2>&1)
	nat+=("$(echo "$EPOCHREALTIME - $t0" | bc -l)")
done
R[native.work]=$(printf '%s\n' "${nat[@]}" | median)

# Outputs must agree: the lines between the work markers against the native run.
work_out() { sed -n '/ferry-init: work begins/,/ferry-init: work ends/p' "$1" | tr -d '\r' | grep -v 'ferry-init:'; }
same=yes
work_out "$TMP/console.ferry-work" | cmp -s - "$TMP/native.out" || same="NO (ferry differs)"
[ $HAVE_QEMU = 1 ] && { work_out "$TMP/console.qemu-work" | cmp -s - "$TMP/native.out" || same="NO (qemu differs)"; }

# Idle: host CPU time ferry uses while the guest sits at its shell prompt.
idle=n/a
mkfifo "$TMP/in"
"$FERRY" run --engine soft --serial stdio -m 256M --kernel "$L/vmlinuz" \
	--initrd "$L/initramfs.cpio.gz" --append "console=ttyS0 quiet" <"$TMP/in" >"$TMP/idle.out" 2>&1 &
pid=$!
exec 3>"$TMP/in"
for ((i = 0; i < 600; i++)); do grep -q 'ferry-init: up' "$TMP/idle.out" && break; sleep 0.1; done
sleep 2
cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
c0=$(cpu)
sleep "$IDLE"
c1=$(cpu)
idle=$(echo "scale=1; ($c1 - $c0) * 100 / $(getconf CLK_TCK) / $IDLE" | bc -l)
printf 'poweroff -f\r' >&3
exec 3>&-
wait "$pid" 2>/dev/null

ratio() { [ "$2" != 0 ] && echo "scale=2; $1 / $2" | bc -l || echo n/a; }
f() { printf '%.3f' "$1"; }
q_init=${R[qemu.init]:-0} q_exit=${R[qemu.exit]:-0} q_work=${R[qemu-work.work]:-0}
echo
printf '%-38s %10s %10s %10s %12s\n' "" "ferry" "qemu-tcg" "native" "ferry/qemu"
printf '%-38s %10s %10s %10s %12s\n' "boot to /init, vmlinux (PVH) (s)" "$(f "${R[ferry-pvh.init]}")" "$(f "$q_init")" - "$(ratio "${R[ferry-pvh.init]}" "$q_init")"
printf '%-38s %10s %10s %10s %12s\n' "boot to poweroff, vmlinux (PVH) (s)" "$(f "${R[ferry-pvh.exit]}")" "$(f "$q_exit")" - "$(ratio "${R[ferry-pvh.exit]}" "$q_exit")"
printf '%-38s %10s %10s %10s %12s\n' "boot to /init, bzImage direct (s)" "$(f "${R[ferry-direct.init]}")" "$(f "$q_init")" - "$(ratio "${R[ferry-direct.init]}" "$q_init")"
printf '%-38s %10s %10s %10s %12s\n' "boot to poweroff, bzImage direct (s)" "$(f "${R[ferry-direct.exit]}")" "$(f "$q_exit")" - "$(ratio "${R[ferry-direct.exit]}" "$q_exit")"
printf '%-38s %10s %10s %10s %12s\n' "boot to /init, bzImage decompressor (s)" "$(f "${R[ferry-decomp.init]}")" "$(f "$q_init")" - "$(ratio "${R[ferry-decomp.init]}" "$q_init")"
printf '%-38s %10s %10s %10s %12s\n' "boot to poweroff, bzImage decompr. (s)" "$(f "${R[ferry-decomp.exit]}")" "$(f "$q_exit")" - "$(ratio "${R[ferry-decomp.exit]}" "$q_exit")"
printf '%-38s %10s %10s %10s %12s\n' "busybox workload in the guest (s)" "$(f "${R[ferry-work.work]}")" "$(f "$q_work")" "$(f "${R[native.work]}")" "$(ratio "${R[ferry-work.work]}" "$q_work")"
echo "workload outputs identical: $same; ferry/native on the workload: $(ratio "${R[ferry-work.work]}" "${R[native.work]}")"
echo "idle guest at its prompt: ferry uses ${idle}% of a host CPU"
if [ $HAVE_QEMU = 1 ]; then
	worst=$(printf '%s\n' "$(ratio "${R[ferry-pvh.init]}" "$q_init")" "$(ratio "${R[ferry-pvh.exit]}" "$q_exit")" "$(ratio "${R[ferry-work.work]}" "$q_work")" | sort -g | tail -1)
	verdict=$(echo "$worst <= 2" | bc -l)
	echo "target 'no slower than 2x QEMU TCG' (same vmlinux and initramfs): worst ratio ${worst}x: $([ "$verdict" = 1 ] && echo MET || echo NOT MET)"
else
	echo "qemu-system-x86_64 is not installed: no ratios (scripts/setup.sh --bench installs it)"
fi
