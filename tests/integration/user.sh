#!/usr/bin/env bash
# The soft engine under real programs: runs Debian's busybox-static natively and under
# ferry-user (tests/tools/ferry-user) on the same generated input and compares stdout byte for
# byte and the exit status. Prints "PASS name" / "FAIL name: why" / "SKIP name: why" per
# workload and ends with "N passed, N failed" (", N skipped" when some could not run). Exit
# status 1 if any failed.
#
# Usage: tests/integration/user.sh path/to/ferry-user [path/to/busybox]
# Env:   FERRY_USER_TIMEOUT (seconds per workload, default 120)
#        FERRY_USER_MB      (size of the generated text input in MB, default 4)
#        FERRY_TEST_ONLY    (extended regex: run only the workloads whose name matches)
set -u

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ ! -x "$1" ]; then
	echo "usage: $0 FERRY_USER_BINARY [BUSYBOX]" >&2
	exit 2
fi
FU=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
BB=${2:-/bin/busybox}
T=${FERRY_USER_TIMEOUT:-120}
MB=${FERRY_USER_MB:-4}
ONLY=${FERRY_TEST_ONLY:-}

PASSED=0 FAILED=0 SKIPPED=0

if [ ! -x "$BB" ] || ! file -L "$BB" 2>/dev/null | grep -q 'statically linked'; then
	echo "SKIP user: no static busybox at $BB (apt-get install busybox-static)"
	echo "0 passed, 0 failed, 1 skipped"
	exit 0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-user-it.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1

# ---- input: deterministic text, about MB megabytes (a linear congruential generator in awk) ----

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
# Smaller files for the slower workloads (sort, sed; od, whose output is 5 times its input).
head -c $((MB * 1024 * 1024 / 4)) input.txt | sed '$d' >small.txt
head -c $((MB * 1024 * 1024 / 16)) input.txt >tiny.txt
printf '#!%s sh\necho "script: $0 $*"\nexit 7\n' "$BB" >script.sh
chmod +x script.sh

# ---- the comparison ----

# case NAME [=STATUS] [<FILE] ARGS...: $PROG (busybox) ARGS natively and under ferry-user, stdin
# from FILE (or /dev/null); compares stdout and the exit status. The native run must exit with
# STATUS (default 0), so a workload that fails natively is not mistaken for a pass.
PROG=$BB
case_() {
	local name=$1 in=/dev/null want=0
	shift
	if [ $# -gt 0 ] && [ "${1:0:1}" = "=" ]; then
		want=${1:1}
		shift
	fi
	if [ $# -gt 0 ] && [ "${1:0:1}" = "<" ]; then
		in=${1:1}
		shift
	fi
	if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then
		return
	fi
	local nrc frc why= t0
	# (The braces keep bash's "Segmentation fault" notices for signal deaths off the output.)
	{
		timeout -k 5 "$T" "$PROG" "$@" <"$in" >native.out 2>native.err
		nrc=$?
	} 2>/dev/null
	t0=$SECONDS
	{
		timeout -k 5 "$T" "$FU" "$PROG" "$@" <"$in" >fu.out 2>fu.err
		frc=$?
	} 2>/dev/null
	if [ $nrc != "$want" ]; then
		why="the native run exited with status $nrc, not $want: $(head -1 native.err)"
	elif [ $frc = 124 ]; then
		why="timed out after ${T}s"
	elif [ $nrc != $frc ]; then
		why="exit status $frc, natively $nrc"
	elif ! cmp -s native.out fu.out; then
		why="stdout differs from the native run ($(cmp native.out fu.out 2>&1 | head -1))"
	fi
	if [ -z "$why" ]; then
		echo "PASS $name ($((SECONDS - t0))s)"
		PASSED=$((PASSED + 1))
	else
		echo "FAIL $name: $why"
		head -n 5 fu.err | sed 's/^/    | /'
		FAILED=$((FAILED + 1))
	fi
}

case_ echo echo hello world
case_ exit-status =3 sh -c 'exit 3'
case_ sh-arith sh -c 'i=0; s=0; while [ $i -lt 10000 ]; do i=$((i+1)); s=$(((s+i*i)%1000003)); done; echo $i $s'
case_ sh-subshells sh -c 'for i in 1 2 3 4 5; do x=$(echo $i | busybox tr 1-5 a-e); echo "$i=$x"; done'
case_ md5sum md5sum input.txt
case_ sha256sum sha256sum input.txt
case_ wc wc input.txt
case_ gzip '<input.txt' gzip -c -6
case_ gzip-gunzip sh -c 'busybox gzip -c <input.txt | busybox gunzip -c | busybox md5sum'
case_ sort sort small.txt
case_ sort-numeric sort -n -k1,1 -k3,3 small.txt
case_ awk awk '{ s += $1; c[$2]++; m = $1 > m ? $1 : m } END { for (k in c) print k, c[k]; printf "%d %d %.6f\n", s, m, s / NR }' input.txt
case_ sed sed -e 's/[0-9][0-9]*/<&>/g' -e '/line1[0-9]*3>/d' -e 's/\(alpha\|beta\)/X/' small.txt
case_ od od -A x -t x1 -t c tiny.txt
case_ od-words od -A d -t x2 -t d4 tiny.txt
case_ pipeline sh -c 'busybox cut -d" " -f2 small.txt | busybox sort | busybox uniq -c | busybox sort -rn'
case_ pipe-sigpipe sh -c 'busybox yes | busybox head -n 3; echo done'
case_ script sh -c './script.sh a b; echo "status $?"'
case_ signal-handler sh -c 'trap "echo caught USR1" USR1; kill -USR1 $$; echo after'
case_ signal-death =139 sh -c 'kill -SEGV $$'
case_ missing-command sh -c 'no-such-command-here; echo "status $?"'

# ferry-user's own mechanisms (signal frames, faults, masks, fork/exec, memory calls, code that
# changes), from a small static C program.
SELFTEST_SRC=$HERE/../tools/ferry-user/guest/selftest.c
if [ -n "$ONLY" ] && ! [[ selftest =~ $ONLY ]]; then
	:
elif ${CC:-cc} -static -O2 -o selftest "$SELFTEST_SRC" 2>selftest.log; then
	PROG=$TMP/selftest
	case_ selftest
	PROG=$BB
else
	echo "SKIP selftest: cannot build a static C program ($(head -1 selftest.log))"
	SKIPPED=$((SKIPPED + 1))
fi

if [ $SKIPPED -gt 0 ]; then
	echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
else
	echo "$PASSED passed, $FAILED failed"
fi
[ $FAILED = 0 ]
