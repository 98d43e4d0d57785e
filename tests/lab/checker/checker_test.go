package main

// Small hand-made histories, each run through the whole program (run())
// as the lab would, with the verdict and exit status each must give.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A register history that is linearizable only with the right reading of
// info writes, cas results and concurrency:
//   - process 0 puts a, process 1 reads a while a cas a->b of process 2
//     is concurrent with it;
//   - process 3 puts c with an unknown outcome (info), and process 4 reads
//     c afterwards: the unknown write took effect;
//   - process 5 then puts d, and a cas expecting c correctly fails;
//   - process 6 puts e and the answer is lost (info): it is never seen,
//     and the final read shows d, so it never took effect.
//
// Plus set adds: one ok, one info that was applied, one failed that was not.
const goodHistory = `{"process":0,"op":"put","key":"/lab/r/0/0","value":"0-1","call":100,"return":200,"status":"ok"}
{"process":1,"op":"get","key":"/lab/r/0/0","result":"0-1","call":210,"return":300,"status":"ok"}
{"process":2,"op":"cas","key":"/lab/r/0/0","expected":"0-1","value":"2-1","ok":true,"call":250,"return":320,"status":"ok"}
{"process":1,"op":"get","key":"/lab/r/0/0","result":"2-1","call":330,"return":340,"status":"ok"}
{"process":3,"op":"put","key":"/lab/r/0/0","value":"3-1","call":350,"return":1350,"status":"info","error":"CD_ETIMEOUT"}
{"process":4,"op":"get","key":"/lab/r/0/0","result":"3-1","call":1400,"return":1450,"status":"ok"}
{"process":5,"op":"put","key":"/lab/r/0/0","value":"5-1","call":1500,"return":1550,"status":"ok"}
{"process":4,"op":"cas","key":"/lab/r/0/0","expected":"3-1","value":"4-2","ok":false,"call":1600,"return":1650,"status":"ok"}
{"process":6,"op":"put","key":"/lab/r/0/0","value":"6-1","call":1700,"return":2700,"status":"info","error":"CD_ETIMEOUT"}
{"process":4,"op":"get","key":"/lab/r/0/1","result":null,"call":1700,"return":1750,"status":"ok"}
{"process":7,"op":"get","key":"/lab/r/0/1","call":1700,"return":2700,"status":"info","error":"CD_ETIMEOUT"}
{"process":4,"op":"put","key":"/lab/r/0/1","value":"4-3","call":1800,"return":1900,"status":"fail","error":"ECONNREFUSED"}
{"process":4,"op":"add","key":"/lab/set/4-4","value":"4-4","call":2000,"return":2100,"status":"ok"}
{"process":8,"op":"add","key":"/lab/set/8-1","value":"8-1","call":2000,"return":3000,"status":"info","error":"CD_ETIMEOUT"}
{"process":4,"op":"add","key":"/lab/set/4-5","value":"4-5","call":2200,"return":2300,"status":"fail","error":"CD_ENOTLEADER"}
`

const goodFinal = `{"key":"/lab/r/0/0","value":"5-1","mod_rev":7}
{"key":"/lab/set/4-4","value":"4-4","mod_rev":8}
{"key":"/lab/set/8-1","value":"8-1","mod_rev":9}
`

type files struct {
	t   *testing.T
	dir string
}

func newFiles(t *testing.T) *files {
	return &files{t, t.TempDir()}
}

func (f *files) write(name, content string) string {
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// check runs the program; it returns the exit status and the output.
func check(t *testing.T, args ...string) (int, string) {
	var out, errOut bytes.Buffer
	rc := run(args, &out, &errOut)
	t.Logf("lab-checker %s -> %d\n%s%s", strings.Join(args, " "), rc, out.String(), errOut.String())
	return rc, out.String() + errOut.String()
}

func wantLine(t *testing.T, out, prefix string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return
		}
	}
	t.Errorf("no line starting %q in:\n%s", prefix, out)
}

func TestLinearizableHistoryPasses(t *testing.T) {
	f := newFiles(t)
	h := f.write("h.jsonl", goodHistory)
	fin := f.write("final.jsonl", goodFinal)
	rc, out := check(t, "--history", h, "--final", fin)
	if rc != 0 {
		t.Fatalf("exit %d, want 0", rc)
	}
	wantLine(t, out, "linearizability: PASS 2 keys")
	wantLine(t, out, "final-read: PASS 1 of 1 acknowledged adds present; 0 failed writes visible; unknown adds: 1, 1 of them applied")
	wantLine(t, out, "lab-checker: 3 passed, 0 failed")
}

func TestStaleReadFails(t *testing.T) {
	f := newFiles(t)
	// After the ok put of 5-1 returned, a read still sees 3-1.
	stale := goodHistory + `{"process":9,"op":"get","key":"/lab/r/0/0","result":"3-1","call":1560,"return":1580,"status":"ok"}` + "\n"
	h := f.write("h.jsonl", stale)
	html := filepath.Join(f.dir, "timelines")
	rc, out := check(t, "--history", h, "--html", html)
	if rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	wantLine(t, out, "  key /lab/r/0/0 is not linearizable: timeline in "+filepath.Join(html, "lin_lab_r_0_0.html"))
	wantLine(t, out, "linearizability: FAIL")
	if st, err := os.Stat(filepath.Join(html, "lin_lab_r_0_0.html")); err != nil || st.Size() < 1000 {
		t.Errorf("no timeline written: %v", err)
	}
}

func TestReadOfFailedWriteFails(t *testing.T) {
	f := newFiles(t)
	// 4-3 was reported failed (not applied), yet a read returns it.
	h := f.write("h.jsonl", goodHistory+`{"process":9,"op":"get","key":"/lab/r/0/1","result":"4-3","call":1950,"return":1960,"status":"ok"}`+"\n")
	rc, out := check(t, "--history", h)
	if rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	wantLine(t, out, "linearizability: FAIL")
}

func TestCasResultsAreChecked(t *testing.T) {
	f := newFiles(t)
	// A cas that says it held although the value was not the expected one.
	bad := strings.Replace(goodHistory, `"expected":"3-1","value":"4-2","ok":false`, `"expected":"3-1","value":"4-2","ok":true`, 1)
	h := f.write("h.jsonl", bad)
	if rc, _ := check(t, "--history", h); rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
}

func TestFinalReadMustMatchRegisters(t *testing.T) {
	f := newFiles(t)
	h := f.write("h.jsonl", goodHistory)
	// The final read shows an older value of the register.
	fin := f.write("final.jsonl", strings.Replace(goodFinal, `"5-1"`, `"2-1"`, 1))
	rc, out := check(t, "--history", h, "--final", fin)
	if rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	wantLine(t, out, "linearizability: FAIL")
}

func TestLostAcknowledgedAddFails(t *testing.T) {
	f := newFiles(t)
	h := f.write("h.jsonl", goodHistory)
	fin := f.write("final.jsonl", strings.Replace(goodFinal, `{"key":"/lab/set/4-4","value":"4-4","mod_rev":8}`+"\n", "", 1))
	rc, out := check(t, "--history", h, "--final", fin)
	if rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	wantLine(t, out, "  /lab/set/4-4 (")
	wantLine(t, out, "final-read: FAIL 0 of 1 acknowledged adds present")
	wantLine(t, out, "linearizability: PASS")
}

func TestFailedAddVisibleFails(t *testing.T) {
	f := newFiles(t)
	h := f.write("h.jsonl", goodHistory)
	fin := f.write("final.jsonl", goodFinal+`{"key":"/lab/set/4-5","value":"4-5","mod_rev":10}`+"\n")
	rc, out := check(t, "--history", h, "--final", fin)
	if rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	wantLine(t, out, "final-read: FAIL 1 of 1 acknowledged adds present; 1 failed writes visible")
}

func TestChildRevisionGoingBackFails(t *testing.T) {
	f := newFiles(t)
	h := f.write("h.jsonl", goodHistory)
	good := f.write("c1.jsonl", `{"t":1000000,"revision":5,"age_ms":0,"ok":true}
{"t":6000000,"revision":5,"age_ms":0,"ok":true}
{"t":11000000,"ok":false,"error":"ENOENT"}
{"t":16000000,"revision":7,"age_ms":3,"ok":true}
`)
	back := f.write("c2.jsonl", `{"t":1000000,"revision":5,"age_ms":0,"ok":true}
{"t":6000000,"revision":9,"age_ms":0,"ok":true}
{"t":11000000,"revision":8,"age_ms":0,"ok":true}
`)
	rc, out := check(t, "--history", h, "--child", good)
	if rc != 0 {
		t.Fatalf("monotonic monitor: exit %d, want 0", rc)
	}
	wantLine(t, out, "children: PASS 1 monitors, 3 reads ok, revision went back 0 times, longest gap without a read 10 ms")
	rc, out = check(t, "--history", h, "--child", good, "--child", back)
	if rc != 1 {
		t.Fatalf("revision going back: exit %d, want 1", rc)
	}
	wantLine(t, out, "  revision 8 after 9 at t=11000000")
	wantLine(t, out, "children: FAIL 2 monitors")
}

func TestChildReadsStoppingFails(t *testing.T) {
	f := newFiles(t)
	h := f.write("h.jsonl", goodHistory)
	c := f.write("c.jsonl", `{"t":0,"revision":5,"age_ms":0,"ok":true}
{"t":1000000000,"ok":false,"error":"CD_ECORRUPT"}
{"t":3000000000,"ok":false,"error":"CD_ECORRUPT"}
{"t":3500000000,"revision":6,"age_ms":0,"ok":true}
`)
	rc, out := check(t, "--history", h, "--child", c, "--child-max-gap", "2s")
	if rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	wantLine(t, out, "children: FAIL 1 monitors, 2 reads ok, revision went back 0 times, longest gap without a read 3500 ms (bound 2000 ms)")
}

func TestAvailabilityFigures(t *testing.T) {
	f := newFiles(t)
	// ok ops end at 10 and 20 ms, nothing ok until 520 ms: a 500 ms window;
	// a kill at 25 ms, the first op started after it succeeds at 520 ms.
	h := f.write("h.jsonl", `{"process":0,"op":"put","key":"/k/0","value":"0-1","call":0,"return":10000000,"status":"ok"}
{"process":0,"op":"put","key":"/k/0","value":"0-2","call":11000000,"return":20000000,"status":"ok"}
{"process":0,"op":"put","key":"/k/0","value":"0-3","call":21000000,"return":221000000,"status":"info","error":"CD_ETIMEOUT"}
{"process":1,"op":"get","key":"/k/0","call":222000000,"return":422000000,"status":"info","error":"CD_ETIMEOUT"}
{"process":2,"op":"put","key":"/k/0","value":"2-1","call":423000000,"return":520000000,"status":"ok"}
{"process":2,"op":"get","key":"/k/0","result":"2-1","call":521000000,"return":530000000,"status":"ok"}
`)
	ev := f.write("events.jsonl", `{"t":25000000,"event":"kill-leader","node":2}
{"t":600000000,"event":"heal"}
`)
	rc, out := check(t, "--history", h, "--events", ev)
	if rc != 0 {
		t.Fatalf("exit %d, want 0", rc)
	}
	wantLine(t, out, "figure lab_max_unavailable_ms 500 ms")
	wantLine(t, out, "figure lab_recovery_kill_leader_max_ms 495 ms")
	wantLine(t, out, "  event heal at +0.600 s (")
	rc, out = check(t, "--history", h, "--events", ev, "--recovery-bound", "400ms")
	if rc != 1 {
		t.Fatalf("recovery bound: exit %d, want 1", rc)
	}
	wantLine(t, out, "availability: FAIL")
}

func TestNothingServedFails(t *testing.T) {
	f := newFiles(t)
	h := f.write("h.jsonl", `{"process":0,"op":"get","key":"/k","call":0,"return":200,"status":"fail","error":"ECONNREFUSED"}
{"process":0,"op":"put","key":"/k","value":"0-1","call":300,"return":400,"status":"info","error":"CD_ETIMEOUT"}
`)
	rc, out := check(t, "--history", h)
	if rc != 1 {
		t.Fatalf("exit %d, want 1", rc)
	}
	wantLine(t, out, "  no operation succeeded in the whole run")
	wantLine(t, out, "availability: FAIL ok 0, fail 1, info 1")
}

func TestBadInputExits2(t *testing.T) {
	f := newFiles(t)
	cases := map[string]string{
		"not json":        "{\"process\":0,\n{}\n",
		"unknown op":      `{"process":0,"op":"delete","key":"/k","call":1,"return":2,"status":"ok"}` + "\n",
		"bad status":      `{"process":0,"op":"get","key":"/k","result":null,"call":1,"return":2,"status":"maybe"}` + "\n",
		"no result":       `{"process":0,"op":"get","key":"/k","call":1,"return":2,"status":"ok"}` + "\n",
		"return < call":   `{"process":0,"op":"get","key":"/k","result":null,"call":3,"return":2,"status":"ok"}` + "\n",
		"duplicate value": `{"process":0,"op":"put","key":"/k","value":"v","call":1,"return":2,"status":"ok"}` + "\n" + `{"process":1,"op":"put","key":"/k","value":"v","call":1,"return":2,"status":"ok"}` + "\n",
	}
	for name, content := range cases {
		h := f.write("h.jsonl", content)
		if rc, _ := check(t, "--history", h); rc != 2 {
			t.Errorf("%s: exit %d, want 2", name, rc)
		}
	}
	h := f.write("h.jsonl", goodHistory)
	if rc, _ := check(t, "--history", h, "--final", h); rc != 2 {
		t.Errorf("a history as final read: exit %d, want 2", rc)
	}
	if rc, _ := check(t, "--history", filepath.Join(f.dir, "absent.jsonl")); rc != 2 {
		t.Errorf("missing file: exit %d, want 2", rc)
	}
	if rc, _ := check(t); rc != 2 {
		t.Errorf("no history: exit %d, want 2", rc)
	}
}

func TestUnterminatedLastLineIsSkipped(t *testing.T) {
	f := newFiles(t)
	h := f.write("h.jsonl", goodHistory+`{"process":9,"op":"get","key":"/lab/r/0/0","res`)
	rc, out := check(t, "--history", h)
	if rc != 0 {
		t.Fatalf("exit %d, want 0", rc)
	}
	if !strings.Contains(out, "unterminated last line skipped") {
		t.Errorf("the skipped line is not reported")
	}
}
