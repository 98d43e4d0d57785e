# tests/lab/plan.sh - the fault lab's seeded plans, for run.sh to source.
#
#   lab_plan SCENARIO SEED DURATION_MS   prints the plan, one step a line:
#                                        "<ms from start> <action> [args]"
#
# A plan is written to the run's directory before the run starts, and the
# same scenario and seed give the same plan (awk's srand/rand are
# deterministic for a seed), so SEED=N replays a run's schedule.  Targets
# are roles ("leader", "follower"), resolved when the step runs: who leads
# then depends on the run, and the nemesis log records whom it hit.
#
# Every plan ends its faults by DURATION_MS - 3000 and ends with "heal", so
# the clients see the cluster recover before the run stops.

LAB_SCENARIOS_STANDARD="smoke kill-leader pause-leader leader-isolated random-halves flaky-links clock disk membership power-loss"
LAB_SCENARIOS_EXTENDED="ring bridge-cut kill-pause-mix partition-churn flaky-isolated clock-disk"

lab_duration() { # SCENARIO: its workload's seconds, long enough for its plan
    case $1 in
    smoke) echo 8 ;;
    kill-leader | pause-leader | random-halves) echo 10 ;;
    leader-isolated | flaky-links | power-loss) echo 12 ;;
    clock) echo 13 ;;
    membership) echo 15 ;;
    disk) echo 17 ;;
    *) echo 15 ;;
    esac
}

lab_plan() { # SCENARIO SEED DURATION_MS
    awk -v scen="$1" -v seed="$2" -v dur="$3" -v parents="${LAB_PARENTS:-3}" '
    function r(lo, hi) { return lo + int(rand() * (hi - lo + 1)) }
    function step(t, what) { if (t < dur - 3000) printf "%d %s\n", t, what }
    BEGIN {
        # Mix the scenario name into the seed: each scenario its own plan.
        h = 0
        for (i = 1; i <= length(scen); i++) h = (h * 31 + index("abcdefghijklmnopqrstuvwxyz-", substr(scen, i, 1))) % 1000003
        srand(seed * 1000003 + h)
        t = r(2000, 3000)
        last = dur - 3000
        if (scen == "smoke") {
            # No fault: the checkers must pass on a healthy cluster.
        } else if (scen == "kill-leader") {
            while (t < last - 1500) {
                step(t, "kill leader")
                t += r(800, 2000); step(t, "restart-killed")
                t += r(1500, 3000)
            }
        } else if (scen == "pause-leader") {
            while (t < last - 1500) {
                step(t, "pause leader")
                t += r(500, 2500); step(t, "resume-all")
                t += r(1500, 3000)
            }
        } else if (scen == "leader-isolated") {
            while (t < last - 1500) {
                # Half the rounds first slow the packets coming in to the
                # leader (the acknowledgements of its followers): it then
                # learns late that it lost them, and only its lease makes
                # it drop the VIP before a new leader can claim it.
                if (rand() < 0.5) { step(t, "slow-in leader " r(60, 110)); t += r(300, 800) }
                step(t, "isolate leader " (rand() < 0.5 ? "peers" : "all"))
                t += r(1000, 3000); step(t, "heal-net")
                t += r(1500, 3000)
            }
        } else if (scen == "random-halves") {
            while (t < last - 1500) {
                step(t, "halves " r(1, 1000000))
                t += r(1000, 3000); step(t, "heal-net")
                t += r(1000, 2500)
            }
        } else if (scen == "flaky-links") {
            step(t, "flaky " r(2, 15) " " r(0, 20) " 0." sprintf("%02d", r(2, 15)) " " r(1, 1000000))
            t += r(5000, 8000); step(t, "flaky-off")
            t += r(500, 1000)
            step(t, "oneway leader follower")
            t += r(1000, 2500); step(t, "heal-net")
        } else if (scen == "clock") {
            step(t, "clock-bump follower +" r(600, 7200))
            t += r(1000, 2000); step(t, "clock-rate follower 2")
            t += r(1500, 2500); step(t, "clock-bump leader -" r(600, 7200))
            t += r(1000, 2000); step(t, "clock-rate leader 0.97")
            t += r(1500, 2500); step(t, "kill leader")
            t += r(800, 1500); step(t, "restart-killed")
        } else if (scen == "disk") {
            step(t, "fiu-eio leader")
            t += r(1500, 2500); step(t, "fiu-off")
            t += r(300, 800); step(t, "restart-killed")
            t += r(1500, 2500); step(t, "fill-disk small")
            t += r(3000, 4000); step(t, "unfill-disk")
            t += r(300, 800); step(t, "restart-killed")
            t += r(1500, 2500); step(t, "lose-unsynced follower")
            t += r(1000, 2000); step(t, "lose-unsynced leader")
        } else if (scen == "membership") {
            step(t, "child-join")
            t += r(1000, 2000); step(t, "parent-leave follower")
            t += r(500, 1000); step(t, "parent-rejoin")
            t += r(2000, 3000); step(t, "child-leave")
            t += r(500, 1000); step(t, "parent-leave leader")
            t += r(500, 1000); step(t, "parent-rejoin")
            t += r(1500, 2500); step(t, "child-rejoin")
        } else if (scen == "power-loss") {
            step(t, "power-loss")
            t += r(1500, 3000); step(t, "power-on")
            t += r(2500, 3500); step(t, "lose-unsynced follower")
        } else if (scen == "ring") {
            # Each node reaches only its neighbours (5 parents): no
            # majority sees the same set, yet a majority is connected.
            while (t < last - 2000) {
                step(t, "ring " r(1, 1000000))
                t += r(2000, 4000); step(t, "heal-net")
                t += r(1500, 3000)
            }
        } else if (scen == "bridge-cut") {
            while (t < last - 2000) {
                step(t, "bridge " r(1, 1000000))
                t += r(2000, 4000); step(t, "heal-net")
                t += r(1500, 3000)
            }
        } else if (scen == "kill-pause-mix") {
            while (t < last - 2000) {
                x = rand()
                if (x < 0.4) { step(t, "kill leader"); t += r(500, 1500); step(t, "restart-killed") }
                else if (x < 0.7) { step(t, "pause follower"); t += r(500, 2000); step(t, "resume-all") }
                else { step(t, "pause leader"); t += r(300, 1500); step(t, "resume-all") }
                t += r(1000, 2500)
            }
        } else if (scen == "partition-churn") {
            step(t, "halves " r(1, 1000000))
            t += r(1000, 2000); step(t, "heal-net")
            t += r(500, 1000); step(t, "parent-leave follower")
            t += r(500, 1000); step(t, "parent-rejoin")
            t += r(1500, 2500); step(t, "isolate leader all")
            t += r(1000, 2000); step(t, "heal-net")
            t += r(500, 1000); step(t, "child-join")
        } else if (scen == "flaky-isolated") {
            step(t, "flaky " r(2, 15) " " r(0, 20) " 0." sprintf("%02d", r(5, 15)) " " r(1, 1000000))
            t += r(1500, 2500); step(t, "isolate leader peers")
            t += r(1500, 2500); step(t, "heal-net")
            t += r(1500, 2500); step(t, "kill leader")
            t += r(500, 1000); step(t, "restart-killed")
            t += r(1500, 2500); step(t, "flaky-off")
        } else if (scen == "clock-disk") {
            step(t, "clock-rate follower 2")
            t += r(1000, 2000); step(t, "fiu-eio leader")
            t += r(1500, 2500); step(t, "fiu-off")
            t += r(300, 800); step(t, "restart-killed")
            t += r(1500, 2500); step(t, "lose-unsynced leader")
        } else {
            printf "lab_plan: unknown scenario %s\n", scen > "/dev/stderr"
            exit 2
        }
        printf "%d heal\n", last
    }'
}
