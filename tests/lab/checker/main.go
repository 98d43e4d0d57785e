// lab-checker: the fault lab's offline checks over what its clients wrote
// (tests/tools/lab_client.c).
//
//	lab-checker --history H.jsonl [--history H2.jsonl ...] [--final F.jsonl]
//	            [--child C.jsonl ...] [--events E.jsonl] [--html DIR]
//	            [--key-timeout 30s] [--child-max-gap 2s] [--recovery-bound 0]
//
// History files may also be given as plain arguments.  Checks, one summary
// line each ("NAME: PASS|FAIL|SKIP ..."), details indented before it:
//
//	linearizability  Porcupine, per register key (lin.go); the timeline of
//	                 each violation is written to --html (default: the
//	                 first history's directory) as lin_<key>.html
//	final-read       every ok set add present with its value; no write
//	                 reported failed visible (needs --final)
//	children         per monitor: revisions never decrease, longest time
//	                 without a successful read <= --child-max-gap (needs
//	                 --child)
//	availability     longest window without an ok operation; per event of
//	                 --events, the time to the first ok operation started
//	                 after it; fails when no operation succeeded at all, or
//	                 past --recovery-bound (if set)
//
// Figures as "figure NAME VALUE UNIT" lines; last line "lab-checker: N
// passed, M failed".  Exit status 0 when every check passed, 1 when one
// failed (a search that timed out fails too: nothing was shown), 2 for
// bad usage or input.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/1e6) }

type report struct {
	out            io.Writer
	passed, failed int
}

func (r *report) verdict(name string, ok bool, format string, a ...interface{}) {
	word := "PASS"
	if ok {
		r.passed++
	} else {
		word = "FAIL"
		r.failed++
	}
	fmt.Fprintf(r.out, "%s: %s %s\n", name, word, fmt.Sprintf(format, a...))
}

func (r *report) skip(name, why string) {
	fmt.Fprintf(r.out, "%s: SKIP %s\n", name, why)
}

func (r *report) detail(format string, a ...interface{}) {
	fmt.Fprintf(r.out, "  "+format+"\n", a...)
}

// listSome prints up to 10 items of a list and says how many were left.
func (r *report) listSome(items []string) {
	for i, s := range items {
		if i == 10 {
			r.detail("... and %d more", len(items)-10)
			break
		}
		r.detail("%s", s)
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lab-checker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var histories, children listFlag
	fs.Var(&histories, "history", "a client's history (JSONL; repeatable)")
	finalPath := fs.String("final", "", "the final read (JSONL)")
	fs.Var(&children, "child", "a child monitor's samples (JSONL; repeatable)")
	eventsPath := fs.String("events", "", "the nemesis events (JSONL {\"t\":NS,\"event\":NAME})")
	htmlDir := fs.String("html", "", "where violation timelines go (default: the first history's directory)")
	keyTimeout := fs.Duration("key-timeout", 30*time.Second, "time limit of the search of one key")
	childMaxGap := fs.Duration("child-max-gap", 2*time.Second, "longest allowed time without a successful child read")
	recoveryBound := fs.Duration("recovery-bound", 0, "fail when an event's recovery takes longer (0: report only)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	histories = append(histories, fs.Args()...)
	if len(histories) == 0 {
		fmt.Fprintln(stderr, "lab-checker: no history given (--history FILE)")
		return 2
	}
	if *htmlDir == "" {
		*htmlDir = filepath.Dir(histories[0])
	}
	var inErr *InputError
	bad := func(err error) int {
		if errors.As(err, &inErr) {
			fmt.Fprintf(stderr, "lab-checker: bad input: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "lab-checker: %v\n", err)
		}
		return 2
	}

	ops, err := ReadHistories(histories, stderr)
	if err != nil {
		return bad(err)
	}
	var final map[string]KV
	if *finalPath != "" {
		if final, err = ReadFinal(*finalPath, stderr); err != nil {
			return bad(err)
		}
	}
	samples := map[string][]Sample{}
	for _, p := range children {
		if samples[p], err = ReadSamples(p, stderr); err != nil {
			return bad(err)
		}
	}
	var events []Event
	if *eventsPath != "" {
		if events, err = ReadEvents(*eventsPath, stderr); err != nil {
			return bad(err)
		}
	}
	r := &report{out: stdout}

	// (a) linearizability
	lin := CheckLinearizable(ops, final, *keyTimeout, *htmlDir)
	for _, k := range lin.Illegal {
		if path, ok := lin.HTML[k]; ok {
			r.detail("key %s is not linearizable: timeline in %s", k, path)
		} else {
			r.detail("key %s is not linearizable (no timeline written)", k)
		}
	}
	for _, k := range lin.Unknown {
		r.detail("key %s: search timed out after %s (no verdict)", k, *keyTimeout)
	}
	finalNote := ""
	if final != nil {
		finalNote = ", final read included"
	}
	slowest := ""
	if lin.SlowestKey != "" {
		slowest = fmt.Sprintf(" (slowest key %s: %.2f s)", lin.SlowestKey, lin.Slowest.Seconds())
	}
	r.verdict("linearizability", len(lin.Illegal) == 0 && len(lin.Unknown) == 0,
		"%d keys, %d ops (%d unknown writes%s), %d illegal, %d timed out; %.2f s%s",
		lin.Keys, lin.Ops, lin.Info, finalNote, len(lin.Illegal), len(lin.Unknown),
		lin.Elapsed.Seconds(), slowest)

	// (b) final read
	if final == nil {
		r.skip("final-read", "(no --final)")
	} else {
		f := CheckFinal(ops, final)
		if len(f.Missing) > 0 {
			r.detail("acknowledged adds missing from the final read:")
			r.listSome(f.Missing)
		}
		if len(f.FailedVisible) > 0 {
			r.detail("writes reported failed (not applied) but present in the final read:")
			r.listSome(f.FailedVisible)
		}
		r.verdict("final-read", len(f.Missing) == 0 && len(f.FailedVisible) == 0,
			"%d of %d acknowledged adds present; %d failed writes visible; unknown adds: %d, %d of them applied; %d keys read",
			f.Present, f.Acked, len(f.FailedVisible), f.InfoAdds, f.InfoApplied, len(final))
	}

	// (c) children
	if len(children) == 0 {
		r.skip("children", "(no --child)")
	} else {
		allOK := true
		var worst time.Duration
		reads, backwards := 0, 0
		for _, p := range children {
			c := CheckChild(p, samples[p])
			reads += c.OK
			backwards += len(c.Backwards)
			allOK = allOK && len(c.Backwards) == 0 && c.OK > 0 && c.MaxGap <= *childMaxGap
			if c.MaxGap > worst {
				worst = c.MaxGap
			}
			failNote := ""
			if c.FailedSamples > 0 {
				failNote = ", first error " + c.FirstFailError
			}
			r.detail("%s: %d of %d reads ok%s, revision %d..%d, longest gap %s ms, went back %d times",
				p, c.OK, c.Samples, failNote, c.First, c.Last, ms(c.MaxGap), len(c.Backwards))
			r.listSome(c.Backwards)
		}
		r.verdict("children", allOK, "%d monitors, %d reads ok, revision went back %d times, longest gap without a read %s ms (bound %s ms)",
			len(children), reads, backwards, ms(worst), ms(*childMaxGap))
		fmt.Fprintf(stdout, "figure lab_child_max_gap_ms %s ms\n", ms(worst))
	}

	// (d) availability
	a := CheckAvailability(ops, events)
	recovery := map[string]time.Duration{}
	never := map[string]bool{}
	// A run in which nothing succeeded passes every safety check
	// trivially: it shows nothing.
	availOK := a.OK > 0
	if a.OK == 0 {
		r.detail("no operation succeeded in the whole run")
	}
	for _, rec := range a.Recoveries {
		name := figureName(rec.Event.Name)
		at := float64(rec.Event.T-a.Start) / 1e9
		if rec.Never {
			never[name] = true
			r.detail("event %s at %+.3f s (%s): no operation started after it succeeded", rec.Event.Name, at, rec.Event.Where)
			availOK = availOK && *recoveryBound == 0
			continue
		}
		r.detail("event %s at %+.3f s: first ok operation started after it returned %s ms later", rec.Event.Name, at, ms(rec.After))
		if rec.After > recovery[name] {
			recovery[name] = rec.After
		}
		if *recoveryBound > 0 && rec.After > *recoveryBound {
			availOK = false
		}
	}
	bound := "report only"
	if *recoveryBound > 0 {
		bound = "bound " + ms(*recoveryBound) + " ms"
	}
	r.verdict("availability", availOK,
		"ok %d, fail %d, info %d over %.1f s; longest window without an ok op %s ms (from %+.3f s); %d events (%s)",
		a.OK, a.Fail, a.Info, float64(a.End-a.Start)/1e9, ms(a.MaxGap), float64(a.MaxGapFrom-a.Start)/1e9, len(a.Recoveries), bound)
	fmt.Fprintf(stdout, "figure lab_max_unavailable_ms %s ms\n", ms(a.MaxGap))
	names := make([]string, 0, len(recovery))
	for n := range recovery {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(stdout, "figure lab_recovery_%s_max_ms %s ms\n", n, ms(recovery[n]))
	}

	fmt.Fprintf(stdout, "lab-checker: %d passed, %d failed\n", r.passed, r.failed)
	if r.failed > 0 {
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
