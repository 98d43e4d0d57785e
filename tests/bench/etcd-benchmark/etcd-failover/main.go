// etcd-failover: the etcd side of bench.sh's failover measurement, the
// same probe as "bench_cluster wait" and "bench_cluster failover".
//
//	etcd-failover wait --endpoints E [--timeout-s S]
//	etcd-failover failover --endpoints E --pids P1,P2,.. [--probe-ms MS]
//
// E lists the members' client URLs (http://127.0.0.1:port).
//
// wait: until every member answers Status naming the same leader, the
// member list has every member, each member has applied what the leader
// had committed when asked, and a put goes through.  Exit 0, or 1 after S
// seconds.
//
// failover: find the leader (the member whose Status names itself), send
// SIGKILL to the PID at its position in --pids (the caller started it and
// restarts it), then put through a client of every endpoint until a put
// succeeds, each try bounded by MS ms and failed tries 5 ms apart.  Prints
// "failover_ms X killed I", I the 0-based index of the killed member.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.uber.org/zap"
)

var (
	endpoints []string
	probeMs   int
	timeoutS  int
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "etcd-failover: "+format+"\n", a...)
	os.Exit(1)
}

func newClient(eps []string) *clientv3.Client {
	lc := zap.NewProductionConfig()
	lc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   eps,
		DialTimeout: 2 * time.Second,
		LogConfig:   &lc,
	})
	if err != nil {
		die("client: %v", err)
	}
	return c
}

type nodeStatus struct {
	ok      bool
	id      uint64
	leader  uint64
	commit  uint64
	applied uint64
}

func statusOf(c *clientv3.Client, ep string) nodeStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	r, err := c.Status(ctx, ep)
	if err != nil {
		return nodeStatus{}
	}
	return nodeStatus{true, r.Header.MemberId, r.Leader, r.RaftIndex, r.RaftAppliedIndex}
}

// findLeader returns the index in endpoints of the member that names
// itself leader, or -1.
func findLeader(c *clientv3.Client) int {
	leader := -1
	for i, ep := range endpoints {
		st := statusOf(c, ep)
		if st.ok && st.leader != 0 && st.leader == st.id {
			if leader >= 0 {
				return -1
			}
			leader = i
		}
	}
	return leader
}

func probePut(c *clientv3.Client, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(probeMs)*time.Millisecond)
	defer cancel()
	key := fmt.Sprintf("bench/probe/%d", n)
	_, err := c.Put(ctx, key, "failover-probe")
	return err
}

func healthy(c *clientv3.Client) (bool, string) {
	sts := make([]nodeStatus, len(endpoints))
	leader := -1
	for i, ep := range endpoints {
		sts[i] = statusOf(c, ep)
		if !sts[i].ok {
			return false, ep + " does not answer"
		}
		if sts[i].leader != 0 && sts[i].leader == sts[i].id {
			leader = i
		}
	}
	if leader < 0 {
		return false, "no leader"
	}
	for i, ep := range endpoints {
		if sts[i].leader != sts[leader].id {
			return false, fmt.Sprintf("%s sees leader %x", ep, sts[i].leader)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	ml, err := c.MemberList(ctx)
	cancel()
	if err != nil || len(ml.Members) < len(endpoints) {
		return false, "member list incomplete"
	}
	for _, ep := range endpoints {
		st := statusOf(c, ep)
		if !st.ok || st.applied < sts[leader].commit {
			return false, fmt.Sprintf("%s applied %d < %d", ep, st.applied, sts[leader].commit)
		}
	}
	return true, ""
}

func cmdWait() int {
	c := newClient(endpoints)
	defer c.Close()
	probeMs = 1000
	t0 := time.Now()
	why := "not asked yet"
	for time.Since(t0) < time.Duration(timeoutS)*time.Second {
		ok, w := healthy(c)
		if ok {
			if err := probePut(c, 0); err == nil {
				return 0
			} else {
				w = "put: " + err.Error()
			}
		}
		why = w
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "etcd-failover: wait: not healthy after %d s: %s\n", timeoutS, why)
	return 1
}

func cmdFailover(pids []int) int {
	if len(pids) != len(endpoints) {
		die("%d pids for %d endpoints", len(pids), len(endpoints))
	}
	probe := newClient(endpoints)
	defer probe.Close()
	leader := -1
	var err error
	tFind := time.Now()
	for time.Since(tFind) < 10*time.Second {
		err = probePut(probe, 0)
		leader = findLeader(probe)
		if err == nil && leader >= 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || leader < 0 {
		die("no leader to kill (%v)", err)
	}
	_ = probePut(probe, 1)
	t0 := time.Now()
	if err := syscall.Kill(pids[leader], syscall.SIGKILL); err != nil {
		die("kill %d: %v", pids[leader], err)
	}
	var last error
	for n := 2; time.Since(t0) < time.Duration(timeoutS)*time.Second; n++ {
		if last = probePut(probe, n); last == nil {
			ms := float64(time.Since(t0).Microseconds()) / 1000
			fmt.Printf("failover_ms %.1f killed %d\n", ms, leader)
			return 0
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "etcd-failover: no write within %d s (last error %v)\n", timeoutS, last)
	fmt.Printf("failover_ms -1 killed %d\n", leader)
	return 1
}

func main() {
	if len(os.Args) < 2 {
		die("usage: etcd-failover wait|failover --endpoints E [--pids P,..] [--probe-ms MS] [--timeout-s S]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	eps := fs.String("endpoints", "", "client URLs, comma-separated")
	pidList := fs.String("pids", "", "PIDs in the order of --endpoints")
	fs.IntVar(&probeMs, "probe-ms", 250, "bound of each probe put")
	fs.IntVar(&timeoutS, "timeout-s", 60, "give up after this long")
	fs.Parse(os.Args[2:])
	if *eps == "" {
		die("--endpoints is required")
	}
	endpoints = strings.Split(*eps, ",")
	switch os.Args[1] {
	case "wait":
		os.Exit(cmdWait())
	case "failover":
		var pids []int
		for _, p := range strings.Split(*pidList, ",") {
			n, err := strconv.Atoi(p)
			if err != nil {
				die("bad pid %q", p)
			}
			pids = append(pids, n)
		}
		os.Exit(cmdFailover(pids))
	default:
		die("unknown command %s", os.Args[1])
	}
}
