package main

// Reading the lab's JSON-lines files: the clients' histories, the final
// read, the child monitors and the nemesis events.  Anything malformed is
// an input error (exit status 2): a checker that skipped what it could not
// read could pass a run it never saw.  The one exception is a last line
// without its newline, which a client killed in the middle of a write
// leaves: it is reported and skipped (an operation missing from a history
// can only make the checks stricter, never looser).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Op is one completed operation of a client's history.
type Op struct {
	Where    string // file:line, for messages
	Process  int64
	Kind     string // put, get, cas, add
	Key      string
	Value    string // put, cas, add: the value written
	Expected string // cas
	Found    bool   // ok get: the key existed (Result is its value)
	Result   string // ok get
	CasOK    bool   // ok cas: the compare held
	Call     int64  // CLOCK_MONOTONIC ns
	Return   int64
	Status   string // ok, fail, info
	Err      string
}

type rawOp struct {
	Process  *int64          `json:"process"`
	Op       string          `json:"op"`
	Key      *string         `json:"key"`
	Value    *string         `json:"value"`
	Expected *string         `json:"expected"`
	Result   json.RawMessage `json:"result"`
	OK       *bool           `json:"ok"`
	Call     *int64          `json:"call"`
	Return   *int64          `json:"return"`
	Status   string          `json:"status"`
	Error    string          `json:"error"`
}

// InputError is bad input: exit status 2.
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func inputErr(format string, a ...interface{}) error {
	return &InputError{fmt.Sprintf(format, a...)}
}

// eachLine calls fn with every non-blank line of path and its number.
// warn receives the note about a skipped unterminated last line.
func eachLine(path string, warn io.Writer, fn func(line []byte, n int) error) error {
	f, err := os.Open(path)
	if err != nil {
		return inputErr("%v", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			if len(bytes.TrimSpace(line)) != 0 {
				var probe interface{}
				if json.Unmarshal(line, &probe) != nil {
					fmt.Fprintf(warn, "note: %s:%d: unterminated last line skipped (a writer killed mid-line?)\n", path, n)
					return nil
				}
				return fn(line, n)
			}
			return nil
		}
		if err != nil {
			return inputErr("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := fn(line, n); err != nil {
			return err
		}
	}
}

func strictUnmarshal(line []byte, v interface{}) error {
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// parseOp checks one history line.
func parseOp(line []byte, where string) (Op, error) {
	var r rawOp
	if err := json.Unmarshal(line, &r); err != nil {
		return Op{}, inputErr("%s: %v", where, err)
	}
	o := Op{Where: where, Kind: r.Op, Status: r.Status, Err: r.Error}
	if r.Process == nil || r.Key == nil || *r.Key == "" || r.Call == nil || r.Return == nil {
		return o, inputErr("%s: process, key, call and return are required", where)
	}
	o.Process, o.Key, o.Call, o.Return = *r.Process, *r.Key, *r.Call, *r.Return
	if o.Return < o.Call || o.Call < 0 {
		return o, inputErr("%s: return %d before call %d", where, o.Return, o.Call)
	}
	switch o.Status {
	case "ok", "fail", "info":
	default:
		return o, inputErr("%s: status %q is not ok, fail or info", where, o.Status)
	}
	switch o.Kind {
	case "put", "add", "cas":
		if r.Value == nil {
			return o, inputErr("%s: a %s without a value", where, o.Kind)
		}
		o.Value = *r.Value
		if o.Kind == "cas" {
			if r.Expected == nil {
				return o, inputErr("%s: a cas without expected", where)
			}
			o.Expected = *r.Expected
			if o.Status == "ok" {
				if r.OK == nil {
					return o, inputErr("%s: an ok cas without \"ok\"", where)
				}
				o.CasOK = *r.OK
			}
		}
	case "get":
		if o.Status == "ok" {
			if r.Result == nil {
				return o, inputErr("%s: an ok get without a result", where)
			}
			if !bytes.Equal(bytes.TrimSpace(r.Result), []byte("null")) {
				if err := json.Unmarshal(r.Result, &o.Result); err != nil {
					return o, inputErr("%s: result: %v", where, err)
				}
				o.Found = true
			}
		}
	default:
		return o, inputErr("%s: unknown op %q", where, o.Kind)
	}
	return o, nil
}

// ReadHistories reads every history file; write values must be unique
// across them (the checks rely on it: a value names its write).
func ReadHistories(paths []string, warn io.Writer) ([]Op, error) {
	var ops []Op
	writer := map[string]string{}
	for _, p := range paths {
		err := eachLine(p, warn, func(line []byte, n int) error {
			where := fmt.Sprintf("%s:%d", p, n)
			o, err := parseOp(line, where)
			if err != nil {
				return err
			}
			if o.Kind != "get" {
				if prev, dup := writer[o.Value]; dup {
					return inputErr("%s: value %q was written before, at %s (values must be unique)", where, o.Value, prev)
				}
				writer[o.Value] = where
			}
			ops = append(ops, o)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return ops, nil
}

// KV is one key of the final read.
type KV struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	ModRev uint64 `json:"mod_rev"`
}

func ReadFinal(path string, warn io.Writer) (map[string]KV, error) {
	out := map[string]KV{}
	err := eachLine(path, warn, func(line []byte, n int) error {
		var kv KV
		if err := strictUnmarshal(line, &kv); err != nil || kv.Key == "" {
			return inputErr("%s:%d: not a {\"key\",\"value\",\"mod_rev\"} line", path, n)
		}
		if _, dup := out[kv.Key]; dup {
			return inputErr("%s:%d: key %q twice", path, n, kv.Key)
		}
		out[kv.Key] = kv
		return nil
	})
	return out, err
}

// Sample is one line of a child monitor.
type Sample struct {
	T        int64   `json:"t"`
	Revision *uint64 `json:"revision"`
	AgeMs    uint64  `json:"age_ms"`
	OK       *bool   `json:"ok"`
	Error    string  `json:"error"`
}

func ReadSamples(path string, warn io.Writer) ([]Sample, error) {
	var out []Sample
	err := eachLine(path, warn, func(line []byte, n int) error {
		var s Sample
		if err := strictUnmarshal(line, &s); err != nil || s.OK == nil || (*s.OK && s.Revision == nil) {
			return inputErr("%s:%d: not a child monitor line {\"t\",\"revision\",\"ok\"}", path, n)
		}
		if len(out) > 0 && s.T < out[len(out)-1].T {
			return inputErr("%s:%d: time goes back", path, n)
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// Event is one nemesis action; other fields of the line are kept as text.
type Event struct {
	T     int64
	Name  string
	Where string
}

func ReadEvents(path string, warn io.Writer) ([]Event, error) {
	var out []Event
	err := eachLine(path, warn, func(line []byte, n int) error {
		var e struct {
			T     *int64 `json:"t"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &e); err != nil || e.T == nil || e.Event == "" {
			return inputErr("%s:%d: not an event line {\"t\":NS,\"event\":NAME,...}", path, n)
		}
		out = append(out, Event{T: *e.T, Name: e.Event, Where: fmt.Sprintf("%s:%d", path, n)})
		return nil
	})
	return out, err
}
