#!/usr/bin/env bash
# ferry vs QEMU, side by side, on the same guest images (tests/guests/bench.S, PVH ELF):
#   (a) process start to first guest instruction: wall time of a whole run of a guest whose
#       first instructions write to the debug-exit port (median of BENCH_RUNS runs)
#   (b) one port-I/O exit, round trip: a guest loop of 20000 OUTs to the UART scratch register
#       0x3ff, timed between the "S" and "E" bytes the guest prints around it (timestamped as they
#       arrive on the VMM's stdout), / 20000, median. It includes the guest's 2-instruction loop
#       around each OUT, which on a host that emulates guest kernel mode is a large part: the
#       "net" row subtracts the same loop with a NOP in place of the OUT. The last row is the
#       coarser whole-process way: (wall time with 20000 OUTs - with 0 OUTs) / 20000, medians.
#   (c) memory overhead: the VMM's RSS minus the RSS of its guest-RAM mapping, read from
#       /proc/PID/smaps once the guest has touched 64 MiB and halted
# QEMU runs as `qemu-system-x86_64 -M microvm -accel kvm` (its qboot firmware loads the PVH
# image): the pc machine's SeaBIOS takes minutes where guest kernel mode is emulated.
#
# Usage: bench/bench.sh FERRY_BINARY     Env: BENCH_RUNS (default 7), QEMU (binary to use)
set -u

if [ $# -ne 1 ] || [ ! -x "$1" ]; then
	echo "usage: $0 FERRY_BINARY" >&2
	exit 2
fi
FERRY=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
GDIR=$HERE/../tests/guests
G=$GDIR/build
RUNS=${BENCH_RUNS:-7}
QEMU=${QEMU:-qemu-system-x86_64}
MEM_MIB=256
PIO_N=20000
TOUCH_MIB=64 # what bench_mem touches (bench.S)
TMO=60

make -s -C "$GDIR" >/dev/null || {
	echo "bench: building the guests failed" >&2
	exit 1
}
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	echo "bench: needs /dev/kvm (read/write); nothing measured" >&2
	exit 1
fi
HAVE_QEMU=1
command -v "$QEMU" >/dev/null 2>&1 || HAVE_QEMU=0

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench.XXXXXX")
BGPID=
trap '[ -n "$BGPID" ] && kill $BGPID 2>/dev/null; rm -rf "$TMP"' EXIT

# Command lines (without the kernel) for each VMM.
vmm_cmd() { # vmm_cmd ferry|qemu KERNEL
	case $1 in
	ferry) echo "$FERRY run --engine kvm --serial stdio --no-reboot -m ${MEM_MIB}M --kernel $2" ;;
	qemu) echo "$QEMU -M microvm -accel kvm -m ${MEM_MIB}M -nodefaults -no-user-config -display none" \
		"-serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel $2" ;;
	esac
}

# time_runs VMM KERNEL: prints the median wall time in microseconds of RUNS runs (after one
# warm-up run), or "ERR <why>" when a run does not end with status 1 (guest wrote 0 to 0xf4).
time_runs() {
	local vmm=$1 kernel=$2 cmd i t0 t1 rc
	local -a times=()
	cmd=$(vmm_cmd "$vmm" "$kernel")
	for ((i = 0; i <= RUNS; i++)); do
		t0=$EPOCHREALTIME
		timeout $TMO $cmd </dev/null >"$TMP/$vmm.out" 2>"$TMP/$vmm.err"
		rc=$?
		t1=$EPOCHREALTIME
		if [ $rc != 1 ]; then
			echo "ERR exit status $rc: $(head -c 200 "$TMP/$vmm.err" | tr '\n' ' ')"
			return
		fi
		[ $i = 0 ] && continue # warm-up
		times+=($(((${t1/./} - ${t0/./}))))
	done
	printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# marker_runs VMM KERNEL: median, over RUNS runs (after a warm-up), of the microseconds between
# the guest's "S" and "E" console bytes; or "ERR <why>".
marker_runs() {
	local vmm=$1 kernel=$2 cmd i t
	local -a times=()
	cmd=$(vmm_cmd "$vmm" "$kernel")
	for ((i = 0; i <= RUNS; i++)); do
		t=$(timeout $TMO $cmd </dev/null 2>"$TMP/$vmm.err" | {
			s='' e=''
			while IFS= read -r -n1 -d '' c; do
				case $c in
				S) s=$EPOCHREALTIME ;;
				E) e=$EPOCHREALTIME ;;
				esac
			done
			[ -n "$s" ] && [ -n "$e" ] && echo $((${e/./} - ${s/./}))
		})
		if [ -z "$t" ]; then
			echo "ERR no S/E markers on the console: $(head -c 200 "$TMP/$vmm.err" | tr '\n' ' ')"
			return
		fi
		[ $i = 0 ] && continue
		times+=("$t")
	done
	printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# mem_overhead VMM: prints "OVERHEAD_KIB RSS_KIB GUEST_RSS_KIB MAPPING" or "ERR <why>".
mem_overhead() {
	local vmm=$1 cmd i
	cmd=$(vmm_cmd "$vmm" "$G/bench_mem.elf")
	$cmd </dev/null >"$TMP/$vmm.mem" 2>"$TMP/$vmm.err" &
	BGPID=$!
	for ((i = 0; i < TMO * 10; i++)); do
		grep -q T "$TMP/$vmm.mem" 2>/dev/null && break
		kill -0 $BGPID 2>/dev/null || break
		sleep 0.1
	done
	if ! grep -q T "$TMP/$vmm.mem" 2>/dev/null; then
		kill $BGPID 2>/dev/null
		wait $BGPID 2>/dev/null
		BGPID=
		echo "ERR the guest never reported its RAM touched: $(head -c 200 "$TMP/$vmm.err" | tr '\n' ' ')"
		return
	fi
	sleep 0.3
	# The guest-RAM mapping: the one whose size is the RAM size (up to 4 MiB of alignment slack)
	# with the most resident memory.
	awk -v lo=$((MEM_MIB * 1024)) -v hi=$((MEM_MIB * 1024 + 4096)) '
		/^[0-9a-f]+-[0-9a-f]+ / { map = $0; next }
		/^Size:/ { size = $2; next }
		/^Rss:/ { total += $2; if (size >= lo && size <= hi && $2 > best) { best = $2; bmap = map } }
		END {
			if (bmap == "") { print "ERR no mapping of the guest RAM size in smaps"; exit }
			gsub(/ +/, " ", bmap)
			print total - best, total, best, bmap
		}' /proc/$BGPID/smaps
	kill $BGPID 2>/dev/null
	wait $BGPID 2>/dev/null
	BGPID=
}

ms() { awk -v u="$1" 'BEGIN { printf "%.1f ms", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { printf '%-44s %-14s %-14s %s\n' "$@"; }

echo "ferry $("$FERRY" version 2>/dev/null | head -1 | sed 's/^ferry //') vs" \
	"$([ $HAVE_QEMU = 1 ] && "$QEMU" --version | head -1 || echo "QEMU (not installed)")"
echo "host: $(nproc) CPUs, $(uname -r); KVM: $(grep -qE 'vmx|svm' /proc/cpuinfo && echo hardware-assisted || echo 'nested/paravirtual (no vmx/svm flags)')"
echo "guests: tests/guests/bench.S (PVH ELF), RAM ${MEM_MIB} MiB, median of $RUNS runs after a warm-up"
echo "qemu: $(vmm_cmd qemu KERNEL)"
echo
row "" ferry qemu ferry/qemu

# (a)
declare -A A B0 B1 L M P
for v in ferry qemu; do
	if [ $v = qemu ] && [ $HAVE_QEMU = 0 ]; then
		A[$v]="ERR not installed" B0[$v]="ERR not installed" B1[$v]="ERR not installed"
		L[$v]="ERR not installed" M[$v]="ERR not installed" P[$v]="ERR not installed"
		continue
	fi
	A[$v]=$(time_runs $v "$G/bench_exit.elf")
	B0[$v]=$(time_runs $v "$G/bench_pio0.elf")
	B1[$v]=$(time_runs $v "$G/bench_pio.elf")
	P[$v]=$(marker_runs $v "$G/bench_pio.elf")
	L[$v]=$(marker_runs $v "$G/bench_loop.elf")
	M[$v]=$(mem_overhead $v)
done

cell() { # cell VALUE FORMATTER
	case $1 in
	ERR*) echo "n/a" ;;
	*) "$2" "$1" ;;
	esac
}
us_per() { awk -v u="$1" -v n=$PIO_N 'BEGIN { printf "%.2f us", u / n }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

notes=()
for v in ferry qemu; do
	for what in A B0 B1 P L M; do
		declare -n ref=$what
		case ${ref[$v]} in ERR*) notes+=("$v ($what): ${ref[$v]#ERR }") ;; esac
		unset -n ref
	done
done

# (a)
fa=${A[ferry]} qa=${A[qemu]}
r=n/a
[[ $fa != ERR* && $qa != ERR* ]] && r=$(ratio "$fa" "$qa")
row "(a) process start to first guest instruction" "$(cell "$fa" ms)" "$(cell "$qa" ms)" "$r"

# (b)
fp=${P[ferry]} qp=${P[qemu]}
r=n/a
[[ $fp != ERR* && $qp != ERR* ]] && r=$(ratio "$fp" "$qp")
row "(b) port-I/O exit round trip (OUT 0x3ff)" "$(cell "$fp" us_per)" "$(cell "$qp" us_per)" "$r"
net() { # net VMM -> (OUT loop - NOP loop) in microseconds, or ERR
	local p=${P[$1]} l=${L[$1]}
	if [[ $l == ERR* || $p == ERR* ]]; then echo ERR; else echo $((p - l)); fi
}
fn=$(net ferry) qn=$(net qemu)
r=n/a
[[ $fn != ERR* && $qn != ERR* ]] && r=$(ratio "$fn" "$qn")
row "    net of the guest's loop (OUT - NOP loop)" "$(cell "$fn" us_per)" "$(cell "$qn" us_per)" "$r"
pio() { # pio VMM -> process wall time difference (N OUTs - 0 OUTs) in microseconds, or ERR
	local b0=${B0[$1]} b1=${B1[$1]}
	if [[ $b0 == ERR* || $b1 == ERR* ]]; then echo ERR; else echo $((b1 - b0)); fi
}
fb=$(pio ferry) qb=$(pio qemu)
r=n/a
[[ $fb != ERR* && $qb != ERR* ]] && r=$(ratio "$fb" "$qb")
row "    by process wall time (N=$PIO_N - N=0)" "$(cell "$fb" us_per)" "$(cell "$qb" us_per)" "$r"

# (c)
fm=${M[ferry]} qm=${M[qemu]}
r=n/a
[[ $fm != ERR* && $qm != ERR* ]] && r=$(ratio "${fm%% *}" "${qm%% *}")
row "(c) memory overhead (RSS - guest RAM RSS)" "$(cell "${fm%% *}" mib)" "$(cell "${qm%% *}" mib)" "$r"

echo
for v in ferry qemu; do
	m=${M[$v]}
	[[ $m == ERR* ]] && continue
	set -- $m
	echo "($v, c) total RSS $(mib "$2"), guest RAM mapping RSS $(mib "$3") (guest touched $TOUCH_MIB MiB): ${*:4}"
done
for v in ferry qemu; do
	[[ ${P[$v]} == ERR* || ${L[$v]} == ERR* || ${B0[$v]} == ERR* || ${B1[$v]} == ERR* ]] && continue
	echo "($v, b) in the guest: $PIO_N OUTs $(ms "${P[$v]}"), $PIO_N NOPs $(ms "${L[$v]}");" \
		"process: $PIO_N OUTs $(ms "${B1[$v]}"), 0 OUTs $(ms "${B0[$v]}")"
done
for n in "${notes[@]}"; do
	echo "not measured: $n"
done
[ ${#notes[@]} = 0 ]
