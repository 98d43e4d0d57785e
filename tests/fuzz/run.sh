#!/bin/bash
# Runs libFuzzer targets for a fixed time each and totals the outcome.
#
#   tests/fuzz/run.sh SECONDS BIN...
#
# Each target fuzzes its own corpus, build/fuzz/corpus/<name>, which is
# seeded from tests/fuzz/corpus/<name without "fuzz_"> when that exists and
# grows across runs.  Crash, leak and timeout inputs land in
# build/fuzz/artifacts/<name>/, the full output in build/fuzz/logs/<name>.log.
# A target passes when libFuzzer exits 0 and reports no sanitizer finding.
# Ends with one line, "N passed, M failed" (targets); exits non-zero if any
# target failed.
set -u

if [ $# -lt 2 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 SECONDS BIN..." >&2
    exit 2
fi
seconds=$1
shift

root=$(cd "$(dirname "$0")/../.." && pwd)
passed=0
failed=0
failed_names=()

for bin in "$@"; do
    name=$(basename "$bin")
    corpus="$root/build/fuzz/corpus/$name"
    seeds="$root/tests/fuzz/corpus/${name#fuzz_}"
    artifacts="$root/build/fuzz/artifacts/$name"
    log="$root/build/fuzz/logs/$name.log"
    if [ ! -x "$bin" ]; then
        echo "  FAIL    $name: $bin is not an executable"
        failed=$((failed + 1))
        failed_names+=("$name")
        continue
    fi
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    if [ -d "$seeds" ]; then
        # Never overwrite: the corpus may hold better inputs by now.
        cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    fi

    # Only inputs written by this run are reported below.
    marker="$artifacts/.run-start"
    touch "$marker"
    # libFuzzer's own limit is a soft one; the outer timeout only catches a
    # target that hangs outside the fuzzing loop.
    timeout $((seconds + 120)) "$bin" -max_total_time="$seconds" \
        -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" >"$log" 2>&1
    rc=$?

    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]\+\).*/\1/p' \
        "$log" | tail -n 1)
    execs=${execs:-unknown}
    sanitizers='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer'
    finding=$(grep -m 1 -E \
        "ERROR: ($sanitizers|libFuzzer)|runtime error:|==[0-9]+== ?ERROR" \
        "$log")

    if [ "$rc" = 0 ] && [ -z "$finding" ]; then
        passed=$((passed + 1))
        printf '  PASS    %-24s %s executions in %ss\n' "$name" "$execs" \
            "$seconds"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        case "$finding" in
            *LeakSanitizer*) what="leaked" ;;
            *timeout*) what="timed out" ;;
            *out-of-memory*) what="ran out of memory" ;;
            "") what="exited with status $rc" ;;
            *) what="crashed" ;;
        esac
        printf '  FAIL    %-24s %s after %s executions (log %s)\n' "$name" \
            "$what" "$execs" "$log"
        [ -n "$finding" ] && echo "          $finding"
        find "$artifacts" -type f -newer "$marker" ! -name .run-start \
            -printf '          input: %p\n'
    fi
done

echo
if [ ${#failed_names[@]} -gt 0 ]; then
    echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
