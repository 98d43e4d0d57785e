package main

// The checks other than linearizability: the final read against the
// acknowledged writes, the children's monitors, and the availability
// figures.

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"
)

// FinalResult: every ok set add is in the final read with its value, and
// no write reported as failed is visible there.
type FinalResult struct {
	Acked, Present   int
	InfoAdds         int // unknown adds, and how many of them took effect
	InfoApplied      int
	Missing          []string // "key (where)"
	FailedVisible    []string // "key = value (where)"
	RegisterKeysRead int
}

func CheckFinal(ops []Op, final map[string]KV) FinalResult {
	var r FinalResult
	for _, o := range ops {
		kv, found := final[o.Key]
		switch {
		case o.Kind == "add" && o.Status == "ok":
			r.Acked++
			if found && kv.Value == o.Value {
				r.Present++
			} else if found {
				r.Missing = append(r.Missing, fmt.Sprintf("%s holds %q, not %q (%s)", o.Key, kv.Value, o.Value, o.Where))
			} else {
				r.Missing = append(r.Missing, fmt.Sprintf("%s (%s)", o.Key, o.Where))
			}
		case o.Kind == "add" && o.Status == "info":
			r.InfoAdds++
			if found && kv.Value == o.Value {
				r.InfoApplied++
			}
		case o.Status == "fail" && o.Kind != "get":
			if found && kv.Value == o.Value {
				r.FailedVisible = append(r.FailedVisible, fmt.Sprintf("%s = %q (%s, %s)", o.Key, o.Value, o.Where, o.Err))
			}
		}
	}
	registers := map[string]bool{}
	for _, o := range ops {
		if o.Kind != "add" {
			registers[o.Key] = true
		}
	}
	for k := range registers {
		if _, ok := final[k]; ok {
			r.RegisterKeysRead++
		}
	}
	return r
}

// ChildResult is one monitor's verdict.
type ChildResult struct {
	Path           string
	Samples, OK    int
	First, Last    uint64 // revisions
	Backwards      []string
	MaxGap         time.Duration // longest time without a successful read
	MaxGapAt       int64         // start of that gap (ns)
	FailedSamples  int
	FirstFailError string
}

// CheckChild: revisions never decrease over the successful reads, and
// the longest time between successful reads (counting from the first
// sample and up to the last one, so a monitor that never read anything
// has its whole span as gap).
func CheckChild(path string, samples []Sample) ChildResult {
	r := ChildResult{Path: path}
	r.Samples = len(samples)
	if len(samples) == 0 {
		return r
	}
	var prev uint64
	havePrev := false
	lastOK := samples[0].T
	for _, s := range samples {
		if !*s.OK {
			r.FailedSamples++
			if r.FirstFailError == "" {
				r.FirstFailError = s.Error
			}
			continue
		}
		rev := *s.Revision
		if havePrev && rev < prev {
			r.Backwards = append(r.Backwards, fmt.Sprintf("revision %d after %d at t=%d", rev, prev, s.T))
		}
		if !havePrev {
			r.First = rev
		}
		prev, havePrev = rev, true
		r.Last = rev
		r.OK++
		if gap := time.Duration(s.T - lastOK); gap > r.MaxGap {
			r.MaxGap, r.MaxGapAt = gap, lastOK
		}
		lastOK = s.T
	}
	if gap := time.Duration(samples[len(samples)-1].T - lastOK); gap > r.MaxGap {
		r.MaxGap, r.MaxGapAt = gap, lastOK
	}
	return r
}

// Recovery: how long after a nemesis event the first operation called at
// or after it succeeded (Never when none did).
type Recovery struct {
	Event Event
	After time.Duration
	Never bool
}

type AvailResult struct {
	Start, End     int64
	MaxGap         time.Duration // longest window without any ok op
	MaxGapFrom     int64
	OK, Fail, Info int
	Recoveries     []Recovery
}

// CheckAvailability: the longest window, between the first call and the
// last return of the run, in which no operation completed ok (the ends
// of ok operations mark when the cluster was seen serving), and each
// event's time to the first success of an operation started after it.
func CheckAvailability(ops []Op, events []Event) AvailResult {
	var r AvailResult
	if len(ops) == 0 {
		return r
	}
	r.Start, r.End = int64(math.MaxInt64), int64(math.MinInt64)
	var okEnds []int64
	var okOps []Op
	for _, o := range ops {
		if o.Call < r.Start {
			r.Start = o.Call
		}
		if o.Return > r.End {
			r.End = o.Return
		}
		switch o.Status {
		case "ok":
			r.OK++
			okEnds = append(okEnds, o.Return)
			okOps = append(okOps, o)
		case "fail":
			r.Fail++
		default:
			r.Info++
		}
	}
	sort.Slice(okEnds, func(i, j int) bool { return okEnds[i] < okEnds[j] })
	prev := r.Start
	for _, t := range append(okEnds, r.End) {
		if gap := time.Duration(t - prev); gap > r.MaxGap {
			r.MaxGap, r.MaxGapFrom = gap, prev
		}
		if t > prev {
			prev = t
		}
	}
	sort.Slice(okOps, func(i, j int) bool { return okOps[i].Call < okOps[j].Call })
	for _, e := range events {
		rec := Recovery{Event: e, Never: true}
		// The first ok op called at or after the event that returned
		// first: ops are sorted by call, so every later one is scanned.
		i := sort.Search(len(okOps), func(i int) bool { return okOps[i].Call >= e.T })
		for ; i < len(okOps); i++ {
			if !rec.Never && time.Duration(okOps[i].Call-e.T) >= rec.After {
				break // returns come after calls: nothing later is sooner
			}
			if d := time.Duration(okOps[i].Return - e.T); rec.Never || d < rec.After {
				rec.After, rec.Never = d, false
			}
		}
		r.Recoveries = append(r.Recoveries, rec)
	}
	return r
}

var nonName = regexp.MustCompile(`[^a-z0-9_]+`)

// figureName makes an event name usable in a "figure NAME VALUE UNIT"
// line.
func figureName(event string) string {
	return nonName.ReplaceAllString(strings.ToLower(event), "_")
}
