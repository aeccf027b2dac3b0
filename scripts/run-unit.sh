#!/usr/bin/env bash
# Runs every unit-test binary in BUILD/tests/unit and prints "N passed, N failed" over all of
# them (cmocka's own summaries are printed too).
set -uo pipefail
build=${1:-build}
passed=0 failed=0 skipped=0
for t in "$build"/tests/unit/test_*; do
	[ -x "$t" ] || continue
	out=$("$t" 2>&1)
	rc=$?
	echo "$out" | grep -Ev '^\[ (RUN|      OK) ' || true
	# A binary may run several cmocka groups: add up every group's summary.
	sum() { echo "$out" | sed -n "s/^\[  $1 *\] \([0-9]*\) test.*/\1/p" | awk '{s += $1} END {if (NR) print s}'; }
	p=$(sum PASSED)
	f=$(sum FAILED)
	s=$(sum SKIPPED)
	passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
	# A crash or a non-zero exit with no cmocka summary still counts as a failure.
	if [ $rc -ne 0 ] && [ -z "$f" ]; then
		echo "unit: $t exited with status $rc"
		failed=$((failed + 1))
	fi
done
echo "unit: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
