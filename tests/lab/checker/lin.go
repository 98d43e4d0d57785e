package main

// Linearizability of the register keys, one Porcupine search per key.
//
// The model is one register per key: absent at first, then the value of
// the last put or successful compare-and-set.  What goes into a key's
// history (the usual treatment of a Jepsen history):
//   - ok operations, as they are;
//   - info (unknown) writes, with their return time at +infinity: they may
//     have happened at any point after their call, or never (linearized
//     after everything else, a write changes nothing that was observed);
//     an info cas may have succeeded or not, whichever the state allows;
//   - not info reads (they observed nothing) nor failed operations
//     (definitely not applied: a read that returns a failed write's value
//     therefore fails the check);
//   - the final read, if given, as one more read of each key after every
//     operation (the lab takes it once the clients have stopped).
// Set adds (op "add", one key each) are checked against the final read
// instead (final.go).

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

type regState struct {
	present bool
	value   string
}

type regInput struct {
	kind     string // put, get, cas
	value    string
	expected string
}

type regOutput struct {
	unknown bool // info write: no answer
	found   bool // get
	value   string
	casOK   bool
}

func regStep(state, input, output interface{}) (bool, interface{}) {
	s := state.(regState)
	in := input.(regInput)
	out := output.(regOutput)
	switch in.kind {
	case "put":
		return true, regState{true, in.value}
	case "get":
		if out.found {
			return s.present && s.value == out.value, s
		}
		return !s.present, s
	case "cas":
		// A value compare on an absent key is false (as in etcd).
		held := s.present && s.value == in.expected
		if out.unknown {
			if held {
				return true, regState{true, in.value}
			}
			return true, s
		}
		if out.casOK {
			return held, regState{true, in.value}
		}
		return !held, s
	}
	return false, s
}

func describeOp(input, output interface{}) string {
	in := input.(regInput)
	out := output.(regOutput)
	switch in.kind {
	case "put":
		if out.unknown {
			return fmt.Sprintf("put %s ?", in.value)
		}
		return fmt.Sprintf("put %s", in.value)
	case "get":
		if out.found {
			return fmt.Sprintf("get -> %s", out.value)
		}
		return "get -> (none)"
	default:
		switch {
		case out.unknown:
			return fmt.Sprintf("cas %s->%s ?", in.expected, in.value)
		case out.casOK:
			return fmt.Sprintf("cas %s->%s ok", in.expected, in.value)
		default:
			return fmt.Sprintf("cas %s->%s failed", in.expected, in.value)
		}
	}
}

var registerModel = porcupine.Model{
	Init:              func() interface{} { return regState{} },
	Step:              regStep,
	DescribeOperation: describeOp,
	DescribeState: func(state interface{}) string {
		s := state.(regState)
		if !s.present {
			return "(none)"
		}
		return s.value
	},
	DescribeOperationMetadata: func(info interface{}) string {
		if info == nil {
			return ""
		}
		return info.(string)
	},
}

// LinResult is the outcome of the linearizability check.
type LinResult struct {
	Keys, Ops, Info int
	Illegal         []string // keys
	Unknown         []string // keys whose search timed out
	HTML            map[string]string
	Elapsed         time.Duration
	Slowest         time.Duration
	SlowestKey      string
}

// keyHistories builds the Porcupine history of every register key.
func keyHistories(ops []Op, final map[string]KV) map[string][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	var last int64
	for _, o := range ops {
		if o.Return > last {
			last = o.Return
		}
	}
	for _, o := range ops {
		if o.Kind == "add" || o.Status == "fail" || (o.Status == "info" && o.Kind == "get") {
			continue
		}
		in := regInput{kind: o.Kind, value: o.Value, expected: o.Expected}
		out := regOutput{found: o.Found, value: o.Result, casOK: o.CasOK}
		ret := o.Return
		if o.Status == "info" {
			out = regOutput{unknown: true}
			ret = math.MaxInt64
		}
		meta := fmt.Sprintf("process %d, %s, %s", o.Process, o.Status, o.Where)
		if o.Err != "" {
			meta += ", " + o.Err
		}
		byKey[o.Key] = append(byKey[o.Key], porcupine.Operation{
			ClientId: int(o.Process), Input: in, Call: o.Call, Output: out, Return: ret, Metadata: meta,
		})
	}
	if final != nil {
		for key, h := range byKey {
			kv, found := final[key]
			byKey[key] = append(h, porcupine.Operation{
				ClientId: -1, Input: regInput{kind: "get"}, Call: last + 1,
				Output: regOutput{found: found, value: kv.Value}, Return: last + 2,
				Metadata: "the final read",
			})
		}
	}
	// Porcupine draws one row per client id from 0 up: make them dense.
	for _, h := range byKey {
		ids := map[int]bool{}
		for _, op := range h {
			ids[op.ClientId] = true
		}
		sorted := make([]int, 0, len(ids))
		for id := range ids {
			sorted = append(sorted, id)
		}
		sort.Ints(sorted)
		row := map[int]int{}
		for i, id := range sorted {
			row[id] = i
		}
		for i := range h {
			h[i].ClientId = row[h[i].ClientId]
		}
	}
	return byKey
}

func fileName(key string) string {
	r := strings.NewReplacer("/", "_", " ", "_", "\\", "_", ":", "_")
	return "lin" + r.Replace(key) + ".html"
}

const maxTimelines = 10

// CheckLinearizable runs one search per key (in parallel, each within
// timeout) and writes an HTML timeline of each violation into htmlDir
// ("" for none).
func CheckLinearizable(ops []Op, final map[string]KV, timeout time.Duration, htmlDir string) LinResult {
	start := time.Now()
	byKey := keyHistories(ops, final)
	res := LinResult{Keys: len(byKey), HTML: map[string]string{}}
	keys := make([]string, 0, len(byKey))
	for k, h := range byKey {
		keys = append(keys, k)
		res.Ops += len(h)
		for _, op := range h {
			if op.Output.(regOutput).unknown {
				res.Info++
			}
		}
	}
	sort.Strings(keys)
	type verdict struct {
		key     string
		result  porcupine.CheckResult
		elapsed time.Duration
	}
	verdicts := make([]verdict, len(keys))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t := time.Now()
				r := porcupine.CheckOperationsTimeout(registerModel, byKey[keys[i]], timeout)
				verdicts[i] = verdict{keys[i], r, time.Since(t)}
			}
		}()
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, v := range verdicts {
		if v.elapsed > res.Slowest {
			res.Slowest, res.SlowestKey = v.elapsed, v.key
		}
		switch v.result {
		case porcupine.Illegal:
			res.Illegal = append(res.Illegal, v.key)
			// A timeline each for the first few: a broken run can make
			// every key illegal, and the verbose search costs more.
			if htmlDir != "" && len(res.HTML) < maxTimelines {
				_, info := porcupine.CheckOperationsVerbose(registerModel, byKey[v.key], timeout)
				path := filepath.Join(htmlDir, fileName(v.key))
				if err := os.MkdirAll(htmlDir, 0o755); err == nil {
					if porcupine.VisualizePath(registerModel, info, path) == nil {
						res.HTML[v.key] = path
					}
				}
			}
		case porcupine.Unknown:
			res.Unknown = append(res.Unknown, v.key)
		}
	}
	res.Elapsed = time.Since(start)
	return res
}
