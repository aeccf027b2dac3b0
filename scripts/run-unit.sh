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
	p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
	s=$(echo "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | tail -1)
	passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
	# A crash or a non-zero exit with no cmocka summary still counts as a failure.
	if [ $rc -ne 0 ] && [ -z "$f" ]; then
		echo "unit: $t exited with status $rc"
		failed=$((failed + 1))
	fi
done
echo "unit: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
