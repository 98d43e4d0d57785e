#!/bin/bash
# tests/lab/suite.sh - the fault lab's suites (make lab, lab-extended,
# lab-controls).  Each run is tests/lab/run.sh in its own process, with
# its own namespaces, under a timeout.
#
#   suite.sh standard   every standard scenario under each seed of LAB_SEEDS
#                       ("1 2 3"); one line per scenario, then
#                       "N passed, M failed"; exit 1 when one failed
#   suite.sh extended   5 parents: the extended scenarios and the standard
#                       ones, a sanitizer build of clusterd (LAB_SAN), both
#                       timing profiles
#   suite.sh controls   negative controls that must make a check fail:
#                       nosync (writes never made durable, then a power loss
#                       of every parent: acknowledged writes must be found
#                       missing) and nolease (the VIP without its lease wait,
#                       the leader cut off: two running holders must be
#                       found); "N caught, M missed"; exit 1 when one missed
#
# SEED=N runs only that seed; LAB_ONLY="a b" only those scenarios.  Every
# run's last line and its figures go to build/lab/<suite>.log; the
# directories of failed runs are kept (their path is in the line).
set -u
cd "$(dirname "$0")/../.." || exit 2
SUITE=${1:-standard}
OUT=build/lab
mkdir -p "$OUT"
SUMMARY=$OUT/$SUITE.log
: >"$SUMMARY"
. tests/lab/plan.sh
SEEDS=${SEED:-${LAB_SEEDS:-1 2 3}}
T0=$SECONDS
PASSED=0
FAILED=0

if [ "$(id -u)" != 0 ]; then
    echo "lab: needs root (network namespaces); nothing run"
    exit 1
fi

one() { # SCENARIO SEED: run it, print its RESULT line, return its status
    local out rc
    out=$(timeout -k 10 "${LAB_RUN_TIMEOUT:-180}" bash tests/lab/run.sh "$1" "$2" 2>>"$SUMMARY")
    rc=$?
    echo "$out" >>"$SUMMARY"
    echo "$out" >"$OUT/last.out"
    [ "$rc" = 124 ] && echo "RESULT $1 $2 fail - timed out" >>"$SUMMARY"
    echo "$out" | grep '^RESULT' | tail -1
    return $rc
}

scenario_line() { # SCENARIO: every seed, one line
    local s=$1 seed res st all=pass t=$SECONDS detail="" why=""
    for seed in $SEEDS; do
        res=$(one "$s" "$seed")
        st=$?
        if [ "$st" = 0 ]; then detail+=" $seed:pass"; else
            all=fail; detail+=" $seed:fail"
            [ -n "$why" ] || why=$(echo "$res" | cut -d' ' -f6-)
        fi
    done
    if [ "$all" = pass ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
    printf '%-5s %-18s seeds%s  (%d s)%s\n' "${all^^}" "$s" "$detail" $((SECONDS - t)) \
        "${why:+  first failure: $why}"
}

case $SUITE in
standard)
    for s in ${LAB_ONLY:-$LAB_SCENARIOS_STANDARD}; do scenario_line "$s"; done
    ;;
extended)
    export LAB_PARENTS=5
    [ -n "${LAB_SAN:-}" ] || export LAB_SAN=build/san
    for prof in fast default; do
        export LAB_PROFILE=$prof
        echo "-- 5 parents, profile $prof, build $LAB_SAN"
        for s in ${LAB_ONLY:-$LAB_SCENARIOS_EXTENDED $LAB_SCENARIOS_STANDARD}; do scenario_line "$s"; done
    done
    ;;
controls)
    CAUGHT=0
    MISSED=0
    control() { # NAME SCENARIO PATTERN: the run must fail with PATTERN
        local name=$1 s=$2 pat=$3 seed res st
        for seed in $SEEDS; do
            res=$(LAB_CONTROL=$name one "$s" "$seed")
            st=$?
            if [ "$st" = 1 ] && grep -q -E "$pat" "$OUT/last.out"; then
                echo "CAUGHT $name ($s, seed $seed): $(echo "$res" | cut -d' ' -f6- | cut -c1-160)"
                CAUGHT=$((CAUGHT + 1))
                return
            fi
            echo "  $name ($s, seed $seed) not caught yet: $res"
        done
        echo "MISSED $name: no seed made the checks fail"
        MISSED=$((MISSED + 1))
    }
    control nosync power-loss 'acknowledged|lost|missing|not linearizable|stores differ'
    control nolease leader-isolated 'two running VIP holders'
    echo "$CAUGHT caught, $MISSED missed ($((SECONDS - T0)) s)"
    [ "$MISSED" = 0 ]
    exit
    ;;
*)
    echo "usage: suite.sh standard|extended|controls" >&2
    exit 2
    ;;
esac
grep '^figure' "$SUMMARY" | sort >"$OUT/$SUITE.figures"
echo "$PASSED passed, $FAILED failed ($((SECONDS - T0)) s)"
[ "$FAILED" = 0 ]
