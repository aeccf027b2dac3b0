#!/usr/bin/env bash
# shellcheck disable=SC2016 # ($ in single quotes is for the guest's shell or awk)
# The soft engine (src/engine/soft/) against native execution and user-mode QEMU, side by side
# in one run: the same Debian busybox-static workloads on the same generated input, timed
#   native       busybox ARGS
#   ferry-user   ferry-user --stats busybox ARGS      (tests/tools/ferry-user)
#   interp       FERRY_SOFT_JIT=0 ferry-user busybox ARGS  (the handler loop alone, no translator)
#   qemu-user    qemu-x86_64 busybox ARGS             (Debian's qemu-user, TCG)
# Per workload: the median wall time of BENCH_RUNS runs of each, ferry/native and ferry/qemu
# (time ratios: lower is better for ferry), ferry-user's guest MIPS (the instructions of all its
# processes, summed from --stats, over the wall time of the median run; a pipeline's processes run
# at the same time, so this is a throughput) and a check that the three produce the same stdout
# and exit status. Then bench/mips.c, a static program of two register-only loops timed by
# itself, under all three, and a summary against the targets: each workload within 3x of
# qemu-x86_64's time, and >= 300 MIPS on the register loops.
#
# QEMU user mode does not follow execve (a guest's exec starts a native process), so where a
# workload's shell starts other programs (the gzip pipeline) its command lines go through $R,
# which is empty for native and ferry-user and qemu-x86_64's path for qemu (so the guest shell
# execs a native qemu-x86_64 that runs the child): every process of the pipeline then runs under
# the engine being measured (ferry-user follows execve itself).
#
# Usage: bench/soft.sh [FERRY_USER_BINARY]        (default build/ferry-user; builds no ferry code)
# Env:   BENCH_RUNS     runs per workload and engine, median taken (default 3)
#        BENCH_MB       size of the main generated input in MB (default 4; sed uses half, od a
#                       quarter: their output is larger than their input)
#        BENCH_ARITH    iterations of the shell arithmetic loop (default 100000)
#        BENCH_DEC      iterations of mips.c's dec/jnz loop (default 1e9: 2e9 instructions)
#        BENCH_MIX      iterations of mips.c's 10-instruction ALU loop (default 1e8)
#        BENCH_TIMEOUT  seconds per emulated run before it is killed (default 300)
#        BUSYBOX (default /bin/busybox), QEMU_USER (default qemu-x86_64), CC (default gcc)
set -u
export LC_ALL=C # the decimal point of EPOCHREALTIME and of printf

HERE=$(cd "$(dirname "$0")" && pwd)
FU_ARG=${1:-$HERE/../build/ferry-user}
if [ $# -gt 1 ] || [ ! -x "$FU_ARG" ]; then
	echo "usage: $0 [FERRY_USER_BINARY]   (build it with: make build/ferry-user)" >&2
	exit 2
fi
FU=$(cd "$(dirname "$FU_ARG")" && pwd)/$(basename "$FU_ARG")
BB=${BUSYBOX:-/bin/busybox}
QEMU=${QEMU_USER:-qemu-x86_64}
RUNS=${BENCH_RUNS:-3}
MB=${BENCH_MB:-4}
ARITH=${BENCH_ARITH:-100000}
DEC=${BENCH_DEC:-1000000000}
MIX=${BENCH_MIX:-100000000}
TMO=${BENCH_TIMEOUT:-300}
CC=${CC:-gcc}

if [ ! -x "$BB" ] || ! file -L "$BB" 2>/dev/null | grep -q 'statically linked'; then
	echo "bench-soft: needs a static busybox at $BB (apt-get install busybox-static)" >&2
	exit 1
fi

HAVE_QEMU=1
if ! command -v "$QEMU" >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && [ "$QEMU" = qemu-x86_64 ]; then
		echo "bench-soft: installing qemu-user (for qemu-x86_64)" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -qq --no-install-recommends qemu-user >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 &&
				apt-get install -y -qq --no-install-recommends qemu-user >/dev/null 2>&1; }
	fi
	if ! command -v "$QEMU" >/dev/null 2>&1; then
		echo "bench-soft: $QEMU not found (apt-get install qemu-user, as root): the qemu-user" \
			"column is skipped" >&2
		HAVE_QEMU=0
	fi
fi
QEMU_PATH=
[ $HAVE_QEMU = 1 ] && QEMU_PATH=$(command -v "$QEMU")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-soft.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
T_BEGIN=$EPOCHREALTIME

# ---- inputs: deterministic text (a linear congruential generator in awk), generated once ----

LINES=$((MB * 1024 * 1024 / 32))
"$BB" awk -v n="$LINES" 'BEGIN {
	split("alpha beta gamma delta epsilon zeta eta theta iota kappa", w, " ")
	x = 1
	for (i = 1; i <= n; i++) {
		x = (x * 69069 + 1) % 4294967296; a = x % 100000
		x = (x * 69069 + 1) % 4294967296
		printf "%d %s line%d %x\n", a, w[x % 10 + 1], i, x
	}
}' >input.txt
head -c $((MB * 1024 * 1024 / 2)) input.txt | sed '$d' >half.txt
head -c $((MB * 1024 * 1024 / 4)) input.txt | sed '$d' >quarter.txt

# ---- helpers ----

# median: the middle of the numbers on stdin (the lower middle for an even count).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
# elapsed START END: seconds between two EPOCHREALTIME values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f\n", b - a }'; }
# stats_insns FILE: the instructions of all ferry-user processes in FILE (--stats lines), summed.
stats_insns() {
	awk '/^ferry-user: pid [0-9]+: [0-9]+ instructions/ { s += $4 } END { printf "%.0f\n", s }' "$1"
}

# run ENGINE OUT IN ARGS...: one timed run of busybox ARGS on ENGINE (native|ferry|qemu), stdin
# IN, stdout to OUT, stderr to OUT.err, with R in the environment (empty, or the qemu-x86_64 to
# run a child under). Prints "SECONDS STATUS".
run() {
	local eng=$1 out=$2 in=$3 t0 t1 rc
	shift 3
	# (The braces keep bash's notices of signal deaths off the terminal.)
	{
		case $eng in
		native)
			t0=$EPOCHREALTIME
			R='' "$BB" "$@" <"$in" >"$out" 2>"$out.err"
			rc=$?
			t1=$EPOCHREALTIME
			;;
		ferry)
			t0=$EPOCHREALTIME
			R='' timeout -k 5 "$TMO" "$FU" --stats "$BB" "$@" <"$in" >"$out" 2>"$out.err"
			rc=$?
			t1=$EPOCHREALTIME
			;;
		interp)
			t0=$EPOCHREALTIME
			R='' FERRY_SOFT_JIT=0 timeout -k 5 "$TMO" "$FU" "$BB" "$@" <"$in" >"$out" 2>"$out.err"
			rc=$?
			t1=$EPOCHREALTIME
			;;
		qemu)
			t0=$EPOCHREALTIME
			R=$QEMU_PATH timeout -k 5 "$TMO" "$QEMU_PATH" "$BB" "$@" <"$in" >"$out" 2>"$out.err"
			rc=$?
			t1=$EPOCHREALTIME
			;;
		esac
	} 2>/dev/null
	echo "$(elapsed "$t0" "$t1") $rc"
}

WARNINGS=()
RATIOS=() # ferry/qemu per workload
ROWS=()

fmt_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }'; }

# workload NAME [<FILE] ARGS...: times busybox ARGS on the three engines (RUNS runs each,
# interleaved) and adds a row to the table.
workload() {
	local name=$1 in=/dev/null
	shift
	if [ "${1:0:1}" = "<" ]; then
		in=${1:1}
		shift
	fi
	local engines="native interp ferry" e i res t rc
	[ $HAVE_QEMU = 1 ] && engines="native interp ferry qemu"
	declare -A times=() status=() med=()
	local ferry_runs=""
	for ((i = 1; i <= RUNS; i++)); do
		for e in $engines; do
			res=$(run "$e" "$e.$i.out" "$in" "$@")
			t=${res% *}
			rc=${res#* }
			times[$e]+="$t "
			[ "${status[$e]:-0}" = 0 ] && status[$e]=$rc
			[ "$e" = ferry ] && ferry_runs+="$t $(stats_insns ferry.$i.out.err)"$'\n'
			if [ $i -gt 1 ] && ! cmp -s "$e.1.out" "$e.$i.out"; then
				WARNINGS+=("$name: $e's stdout differs between run 1 and run $i")
			fi
		done
	done
	for e in $engines; do
		# shellcheck disable=SC2086 # (a list of numbers, split on purpose)
		med[$e]=$(printf '%s\n' ${times[$e]} | median)
		if [ "${status[$e]}" = 124 ] || [ "${status[$e]}" = 137 ]; then
			WARNINGS+=("$name: $e timed out after ${TMO}s")
		elif [ "${status[$e]}" != 0 ]; then
			WARNINGS+=("$name: $e exited with status ${status[$e]}: $(grep -v '^ferry-user: pid' "$e.1.out.err" | head -1)")
		fi
		if [ "$e" != native ] && ! cmp -s native.1.out "$e.1.out"; then
			WARNINGS+=("$name: $e's stdout differs from native ($(cmp native.1.out "$e.1.out" 2>&1 | head -1))")
		fi
	done
	# Instructions of the ferry-user run with the median time.
	local insns mips
	insns=$(printf '%s' "$ferry_runs" | sort -g | awk -v k=$(((RUNS + 1) / 2)) 'NR == k { print $2 }')
	mips=$(awk -v n="$insns" -v t="${med[ferry]}" 'BEGIN { printf "%.0f", (t > 0 ? n / t / 1e6 : 0) }')
	local q=- fq=- fn
	fn=$(fmt_ratio "${med[ferry]}" "${med[native]}")
	if [ $HAVE_QEMU = 1 ]; then
		q=$(printf '%.3f' "${med[qemu]}")
		fq=$(fmt_ratio "${med[ferry]}" "${med[qemu]}")
		RATIOS+=("$name $(awk -v a="${med[ferry]}" -v b="${med[qemu]}" 'BEGIN { print a / b }')")
	fi
	ROWS+=("$(printf '%-12s %9.3f %9.3f %12.3f %11s %12s %10s %12s %11s %8s' "$name" \
		"${med[native]}" "${med[interp]}" "${med[ferry]}" "$q" "$fn" "$fq" \
		"$(fmt_ratio "${med[ferry]}" "${med[interp]}")" \
		"$(awk -v n="$insns" 'BEGIN { printf "%.0fM", n / 1e6 }')" "$mips")")
	echo "  $name done" >&2
	rm -f native.*.out* ferry.*.out* qemu.*.out*
}

# ---- the workloads ----

echo "bench-soft: busybox $("$BB" 2>&1 | head -1 | awk '{ print $2 }'), input ${MB} MB" \
	"($(wc -l <input.txt) lines), $RUNS runs each, median" >&2
workload sh-arith sh -c 'i=0; s=0; while [ $i -lt '"$ARITH"' ]; do i=$((i+1)); s=$(((s+i*i)%1000003)); done; echo $i $s'
workload md5sum md5sum input.txt
workload sha256sum sha256sum input.txt
workload gzip-gunzip sh -c '$R '"$BB"' gzip -c input.txt | $R '"$BB"' gunzip -c'
workload sort sort input.txt
workload awk awk '{ for (i = 1; i <= NF; i++) s += $i; n += NF } END { printf "%d %.0f\n", n, s }' input.txt
workload sed sed -e 's/[0-9][0-9]*/<&>/g' -e 's/\(alpha\|beta\)/X/' half.txt
workload od od -A x -t x1 -t c quarter.txt
workload wc wc input.txt

# ---- the register loops (bench/mips.c) ----

MIPS_ROWS=()
MIPS_STATS=
MIPS_LOOP_FERRY=()
if ! "$CC" -static -O2 -o mips "$HERE/mips.c" 2>mips.log; then
	WARNINGS+=("mips: cannot build bench/mips.c static ($(head -1 mips.log)); register loops skipped")
else
	echo "  (register loops)" >&2
	engines="native ferry"
	[ $HAVE_QEMU = 1 ] && engines="native ferry qemu"
	declare -A LT=() CK=()
	stats_lines=""
	for ((i = 1; i <= RUNS; i++)); do
		for e in $engines; do
			case $e in
			native) ./mips "$DEC" "$MIX" >m.out 2>m.err ;;
			ferry) timeout -k 5 "$TMO" "$FU" --stats ./mips "$DEC" "$MIX" >m.out 2>m.err ;;
			qemu) timeout -k 5 "$TMO" "$QEMU_PATH" ./mips "$DEC" "$MIX" >m.out 2>m.err ;;
			esac
			rc=$?
			[ $rc != 0 ] && WARNINGS+=("mips: $e exited with status $rc: $(head -1 m.err)")
			while read -r l n t; do
				case $l in
				dec-jnz | alu-mix)
					LT[$e.$l]+="$t "
					LT[n.$l]=$n
					;;
				checksum) CK[$e]=$n ;;
				esac
			done <m.out
			[ "$e" = ferry ] && stats_lines+="$(awk '/^ferry-user: pid/ { print $7, $4 }' m.err)"$'\n'
		done
	done
	for e in $engines; do
		[ "${CK[$e]:-}" != "${CK[native]:-}" ] &&
			WARNINGS+=("mips: $e's checksum ${CK[$e]:-none} differs from native's ${CK[native]:-none}")
	done
	for l in dec-jnz alu-mix; do
		n=${LT[n.$l]:-0}
		declare -A M=()
		for e in $engines; do
			# shellcheck disable=SC2086 # (a list of numbers, split on purpose)
			M[$e]=$(printf '%s\n' ${LT[$e.$l]:-0} | median)
		done
		mp() { awk -v n="$n" -v t="$1" 'BEGIN { if (t > 0) printf "%.0f", n / t / 1e6; else print "-" }'; }
		qs=- qm=- fq=-
		if [ $HAVE_QEMU = 1 ]; then
			qs=$(printf '%.3f' "${M[qemu]}")
			qm=$(mp "${M[qemu]}")
			fq=$(fmt_ratio "${M[ferry]}" "${M[qemu]}")
		fi
		MIPS_LOOP_FERRY+=("$l $(mp "${M[ferry]}")")
		MIPS_ROWS+=("$(printf '%-12s %11s %9.3f %12.3f %11s %11s %10s %10s %11s' "$l" \
			"$(awk -v n="$n" 'BEGIN { printf "%.0fM", n / 1e6 }')" "${M[native]}" "${M[ferry]}" \
			"$qs" "$(mp "${M[native]}")" "$(mp "${M[ferry]}")" "$qm" "$fq")")
	done
	# ferry-user's own figure for the whole program: the run with the median --stats time.
	MIPS_STATS=$(printf '%s' "$stats_lines" | sort -g |
		awk -v k=$(((RUNS + 1) / 2)) 'NR == k { printf "%.0f %.3f %.1f", $2, $1, $2 / $1 / 1e6 }')
fi

# ---- report ----

echo
echo "ferry-user ($FU) vs native vs ${QEMU_PATH:-qemu-user (skipped)}, $(nproc) CPUs," \
	"median of $RUNS runs, wall seconds"
printf '%-12s %9s %9s %12s %11s %12s %10s %12s %11s %8s\n' workload "native s" "interp s" \
	"ferry-user s" "qemu-user s" ferry/native ferry/qemu ferry/interp "ferry insns" "ferry MIPS"
printf '%s\n' "${ROWS[@]}"
if [ ${#MIPS_ROWS[@]} -gt 0 ]; then
	echo
	echo "register-only loops (bench/mips.c, each loop timed by the program itself)"
	printf '%-12s %11s %9s %12s %11s %11s %10s %10s %11s\n' loop instructions "native s" \
		"ferry-user s" "qemu-user s" "native MIPS" "ferry MIPS" "qemu MIPS" "ferry/qemu"
	printf '%s\n' "${MIPS_ROWS[@]}"
	read -r si ss sm <<<"$MIPS_STATS"
	echo "ferry-user --stats, whole program: $si instructions in $ss s, $sm MIPS"
fi
echo
for w in "${WARNINGS[@]}"; do
	echo "WARNING: $w"
done
[ ${#WARNINGS[@]} -eq 0 ] && echo "outputs: native, ferry-user and qemu-user identical on every workload"

if [ $HAVE_QEMU = 1 ] && [ ${#RATIOS[@]} -gt 0 ]; then
	read -r geo worst worstname < <(printf '%s\n' "${RATIOS[@]}" | awk '
		{ l += log($2); if ($2 > w) { w = $2; wn = $1 } }
		END { printf "%.2f %.2f %s\n", exp(l / NR), w, wn }')
	verdict=$(awk -v w="$worst" 'BEGIN { print (w <= 3 ? "MET" : "NOT MET") }')
	echo "summary: ferry/qemu time, geometric mean ${geo}x, worst ${worst}x ($worstname);" \
		"target <= 3x on every workload: $verdict"
else
	echo "summary: ferry/qemu not measured (no qemu-user); target <= 3x on every workload: UNKNOWN"
fi
if [ -n "$MIPS_STATS" ]; then
	read -r si ss sm <<<"$MIPS_STATS"
	verdict=$(awk -v m="$sm" 'BEGIN { print (m >= 300 ? "MET" : "NOT MET") }')
	loops=$(printf '%s, ' "${MIPS_LOOP_FERRY[@]}")
	echo "summary: register-loop MIPS (ferry-user --stats) $sm (${loops%, } by loop);" \
		"target >= 300: $verdict"
else
	echo "summary: register-loop MIPS not measured; target >= 300: UNKNOWN"
fi
echo "(whole run: $(elapsed "$T_BEGIN" "$EPOCHREALTIME" | awk '{ printf "%.0f", $1 }') s)"
