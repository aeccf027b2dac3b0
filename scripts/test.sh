#!/usr/bin/env bash
# The whole test suite (what `make test` and CI run):
#   1. build with gcc; unit tests, integration tests (guests on KVM and on the soft engine), the soft engine's
#      differential test against the host CPU, busybox under ferry-user against native
#   2. the same under ASan+UBSan (fewer cases, smaller inputs)
#   3. a clang build (warnings are errors), clang-format, cppcheck and clang-tidy checks
#   4. a short fuzz pass over the kernel loaders
# Ends with one line "N passed, N failed" over everything.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The Linux guest for the soft engine's Linux cases (cached outside the tree; without network
# the cases are skipped with the reason).
./scripts/fetch-linux.sh || echo "fetch-linux failed: the Linux cases will be skipped"
jobs=$(nproc)
total_pass=0 total_fail=0 total_skip=0
failures=()

# Adds the counts from a runner's "N passed, N failed[, N skipped]" line to the totals.
tally() { # name logfile rc
	local name=$1 log=$2 rc=$3 line p f s
	line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
	p=$(echo "$line" | sed -n 's/.*\b\([0-9]\+\) passed.*/\1/p')
	f=$(echo "$line" | sed -n 's/.*\b\([0-9]\+\) failed.*/\1/p')
	s=$(echo "$line" | sed -n 's/.*\b\([0-9]\+\) skipped.*/\1/p')
	if [ -z "$line" ]; then p=0; f=1; fi
	if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then f=1; fi
	total_pass=$((total_pass + ${p:-0})); total_fail=$((total_fail + ${f:-0}))
	total_skip=$((total_skip + ${s:-0}))
	[ "${f:-0}" -eq 0 ] || failures+=("$name")
}

# A check that passes or fails as a whole (a build, a lint).
check() { # name command...
	local name=$1; shift
	echo "== $name"
	if "$@"; then echo "1 passed, 0 failed" >/tmp/ferry-check.$$; else echo "0 passed, 1 failed" >/tmp/ferry-check.$$; fi
	tally "$name" /tmp/ferry-check.$$ 0
	rm -f /tmp/ferry-check.$$
}

suite() { # name build-dir diff-cases user-mb linux-timeout make-args...
	local name=$1 build=$2 diff_cases=$3 user_mb=$4 linux_timeout=$5; shift 5
	echo "== $name: build"
	mkdir -p "$build"
	if ! make -s -j"$jobs" BUILD="$build" "$@" "$build/ferry" "$build/ferry-user" \
		"$build/diff-test" guests unit-bins; then
		echo "0 passed, 1 failed" >"$build/unit.log"; tally "$name build" "$build/unit.log" 1; return
	fi
	echo "== $name: unit tests"
	./scripts/run-unit.sh "$build" 2>&1 | tee "$build/unit.log"
	tally "$name unit" "$build/unit.log" "${PIPESTATUS[0]}"
	echo "== $name: integration tests"
	./tests/integration/run.sh "$build/ferry" 2>&1 | tee "$build/integration.log"
	tally "$name integration" "$build/integration.log" "${PIPESTATUS[0]}"
	echo "== $name: integration tests, guests on the soft engine"
	FERRY_TEST_ENGINE=soft FERRY_TEST_TIMEOUT=$linux_timeout FERRY_TEST_LINUX_WAIT=$linux_timeout \
		./tests/integration/run.sh "$build/ferry" 2>&1 |
		tee "$build/integration-soft.log"
	tally "$name integration soft" "$build/integration-soft.log" "${PIPESTATUS[0]}"
	echo "== $name: soft engine against the host CPU ($diff_cases cases per form)"
	"$build/diff-test" --cases "$diff_cases" 2>&1 | tail -25 | tee "$build/diff.log"
	tally "$name diff" "$build/diff.log" "${PIPESTATUS[0]}"
	echo "== $name: busybox under ferry-user against native (${user_mb} MB inputs)"
	FERRY_USER_MB=$user_mb ./tests/integration/user.sh "$build/ferry-user" 2>&1 |
		tee "$build/user.log"
	tally "$name user" "$build/user.log" "${PIPESTATUS[0]}"
}

suite "gcc" build 200 4 90
suite "asan+ubsan" build-asan 20 1 240 SAN=1 CFLAGS="-O1 -g"
check "clang build" make -s -j"$jobs" CC=clang BUILD=build-clang build-clang/ferry \
	build-clang/ferry-user build-clang/diff-test unit-bins
check "clang-format" make -s format-check
check "cppcheck" make -s lint
check "clang-tidy" make -s tidy
mkdir -p build
echo "== fuzz (kernel loaders, ${FUZZ_SECONDS:-20} s)"
make -s fuzz SECONDS_FUZZ="${FUZZ_SECONDS:-20}" 2>&1 | tail -5 | tee build/fuzz.log
fuzz_rc=${PIPESTATUS[0]}
if [ "$fuzz_rc" -eq 0 ]; then echo "1 passed, 0 failed" >>build/fuzz.log; else echo "0 passed, 1 failed" >>build/fuzz.log; fi
tally "fuzz" build/fuzz.log 0

echo
[ ${#failures[@]} -eq 0 ] || echo "failed parts: ${failures[*]}"
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]
