#!/bin/bash
# Runs test binaries and totals their results into one closing line,
# "N passed, M failed".  Each binary is a cmocka suite (its summary lines
# are counted) or a plain program (exit 0 counts as one pass).  A binary
# that crashes or exits non-zero without a summary counts as one failure,
# so a test that dies early can never look like a pass.
set -u
passed=0
failed=0
failed_names=()
logdir=${BUILD:-build}/test-logs
mkdir -p "$logdir"
# Some tests preload a fault shim (liblostwrites.so) into the programs they
# start; an ASan build refuses to run after another preload unless told
# that its runtime need not come first.  Harmless without ASan.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
for t in "$@"; do
    name=$(basename "$t")
    log="$logdir/$name.log"
    start=$(date +%s.%N)
    CMOCKA_MESSAGE_OUTPUT=stdout timeout "${TEST_TIMEOUT:-600}" "$t" >"$log" 2>&1
    rc=$?
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}')
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]\+\) test(s)\./\1/p' "$log" | awk '{s+=$1} END{print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]\+\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END{print s+0}')
    if grep -q '^\[==========\]' "$log"; then
        if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    else
        if [ "$rc" = 0 ]; then p=1; f=0; else p=0; f=1; fi
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" != 0 ]; then
        failed_names+=("$name")
        printf '  FAIL    %-28s %6ss  (%s passed, %s failed; log %s)\n' "$name" "$secs" "$p" "$f" "$log"
        grep -E '^\[  (FAILED|ERROR) \]|error:|ERROR|Assertion|Sanitizer' "$log" | head -20 | sed 's/^/          /'
    else
        printf '  PASS    %-28s %6ss  (%s)\n' "$name" "$secs" "$p"
    fi
done
echo
if [ ${#failed_names[@]} -gt 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
