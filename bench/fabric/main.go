// Command fabric measures loomd's service controller at fleet scale: a real
// loomd (build/bin/loomd, its embedded etcd) and, in this process, fake
// host agents speaking its API over HTTP as real ones do — register,
// long-poll the goal, heartbeat with every guest's state. Services (one
// worker role each; endpoints are not under test) are deployed and the
// time until every instance is reported Running is place_s; then a share
// of the hosts goes silent, and converge_s is the time from their being
// declared Lost (grace + lost-after after their last heartbeat) until
// every instance runs again on the others. Heartbeat latency (p99) is
// measured throughout (hb_p99_ms) and in the steady state between
// (hb_steady_p99_ms: nothing changing, heartbeats alone), loomd's peak
// memory at the end, and, for comparison, the write rate of a bare etcd
// on the same machine. The fake hosts run on the same two cores as
// loomd.
//
//	go run ./bench/fabric [-hosts 10000] [-services 1000] [-instances 100]
//
// Last line: bench fabric: place_s=… converge_s=… hb_p99_ms=… rss_mb=… …
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/loomfabric/loom/bench/internal/apirig"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func main() {
	hosts := flag.Int("hosts", 10000, "fake hosts")
	services := flag.Int("services", 1000, "services, one worker role each")
	instances := flag.Int("instances", 100, "instances per service")
	beat := flag.Duration("heartbeat", 5*time.Second, "heartbeat interval")
	lostShare := flag.Float64("lost", 0.05, "share of the hosts that go silent")
	grace := flag.Duration("grace", 10*time.Second, "loomd --grace")
	lostAfter := flag.Duration("lost-after", 10*time.Second, "loomd --lost-after")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up on a phase after this")
	steady := flag.Int("steady", 2, "heartbeat intervals of steady state measured between placing and losing hosts")
	loomdBin := flag.String("loomd", "build/bin/loomd", "loomd binary")
	debugAddr := flag.String("debug-addr", "", "loomd --debug-addr (its profiler, to see where the time goes)")
	flag.Parse()
	if *steady < 1 || *hosts < 1 || *services < 1 || *instances < 1 {
		log.Fatal("bench fabric: -hosts, -services, -instances and -steady must be at least 1")
	}
	if err := run(*loomdBin, *hosts, *services, *instances, *beat, *lostShare, *grace, *lostAfter, *timeout, *steady, *debugAddr); err != nil {
		log.Fatal("bench fabric: ", err)
	}
}

func run(bin string, nHosts, nSvcs, perSvc int, beat time.Duration, lostShare float64, grace, lostAfter, timeout time.Duration, steadyBeats int, debugAddr string) (err error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "bench-fabric-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }() // a temporary directory: what is left is only litter

	storeRate, err := etcdWriteRate(ctx, filepath.Join(dir, "etcd"), 5*time.Second)
	if err != nil {
		return fmt.Errorf("bare etcd: %w", err)
	}
	fmt.Printf("bare etcd on this machine: %.0f writes/s (8 writers, 1 KiB values)\n", storeRate)

	// Each host calls with its own certificate, on a connection of its
	// own (HTTP/2: its goal long-poll and its heartbeats share it): as
	// many open files in this process and in loomd (which inherits the
	// limit), and some to spare.
	if err := raiseFileLimit(uint64(nHosts + 2048)); err != nil {
		return err
	}
	args := []string{"--heartbeat", beat.String(), "--grace", grace.String(), "--lost-after", lostAfter.String()}
	if debugAddr != "" {
		args = append(args, "--debug-addr", debugAddr)
	}
	ld, err := apirig.Start(ctx, bin, dir, args...)
	if err != nil {
		return fmt.Errorf("%w (run 'make build')", err)
	}
	defer ld.Stop()
	defer func() {
		if err != nil {
			fmt.Printf("loomd's log ends:\n%s\n", ld.LogTail(20))
		}
	}()
	enrollTok, err := ld.EnrollToken()
	if err != nil {
		return err
	}

	enroll := &client.Client{BaseURL: ld.Client.BaseURL, Token: enrollTok, TLS: ld.Client.TLS}
	op := ld.Client

	fmt.Printf("registering %d hosts (16 vCPUs, 64 GiB each) in racks of 40\n", nHosts)
	t0 := time.Now()
	fleet := &fleet{beat: beat}
	var rackLines []string
	regs := make([]*host, nHosts)
	var regErr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range nHosts {
		mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", (i>>24)&0xff, (i>>16)&0xff, (i>>8)&0xff, i&0xff)
		rackLines = append(rackLines, fmt.Sprintf("r%03d,%s\n", i/40, mac))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r, nc, err := enroll.Enroll(ctx, api.Registration{Mode: api.ModeHost, MAC: mac, AgentVersion: "bench",
				Accel: &api.Accel{Accel: "tcg", CPU: "max"},
				Inventory: api.Inventory{CPU: api.CPU{Count: 16, Model: "bench"}, Memory: 64 << 30,
					NICs: []api.NIC{{Name: "eth0", MAC: mac, Link: true}}}})
			if err != nil {
				regErr.Store(err)
				return
			}
			regs[i] = &host{c: nc, reg: r, fleet: fleet, vms: map[string]*vm{}}
		}()
	}
	wg.Wait()
	if err, _ := regErr.Load().(error); err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	for len(rackLines) > 0 { // a rack file holds at most 512 servers
		n := min(len(rackLines), 500)
		if _, err := op.ImportRack(ctx, []byte("rack,mac\n"+strings.Join(rackLines[:n], ""))); err != nil {
			return fmt.Errorf("rack import: %w", err)
		}
		rackLines = rackLines[n:]
	}
	fmt.Printf("  %d hosts registered and racked in %.1fs\n", nHosts, time.Since(t0).Seconds())

	hctx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	for _, h := range regs {
		h.start(hctx)
	}
	if _, err := op.AddImage(ctx, "work", strings.NewReader(strings.Repeat("\x00", 4096)), nil); err != nil {
		return err
	}
	// The fleet comes up before anything is deployed on it, as a real
	// one does: every host Ready, past its first goal and heartbeat.
	// (Here all 10,000 start in the same second, which no real fleet
	// does; that storm is reported, not counted in the figures.)
	t0 = time.Now()
	if err := waitReady(ctx, op, nHosts, timeout); err != nil {
		return err
	}
	time.Sleep(beat + time.Second)
	fmt.Printf("  all %d hosts Ready after %.1fs; heartbeats meanwhile (all hosts starting at once): %s\n", nHosts, time.Since(t0).Seconds(), fleet.hb.summary())
	fleet.hbAll.reset()

	total := nSvcs * perSvc
	fmt.Printf("deploying %d services of %d instances (%d in all)\n", nSvcs, perSvc, total)
	fleet.hb.reset()
	t0 = time.Now()
	for i := range nSvcs {
		m := fmt.Sprintf("name: s%04d\nroles:\n  - name: w\n    kind: worker\n    package: work\n    instances: %d\n    vcpus: 1\n    memory: 256MiB\n", i, perSvc)
		if _, err := op.DeployService(ctx, []byte(m)); err != nil {
			return fmt.Errorf("deploying s%04d: %w", i, err)
		}
	}
	deployed := time.Since(t0)
	if err := fleet.waitRunning(total, timeout, "placing"); err != nil {
		return err
	}
	place := time.Since(t0)
	fmt.Printf("  deployed in %.1fs, all %d Running after %.1fs; heartbeats meanwhile: %s\n", deployed.Seconds(), total, place.Seconds(), fleet.hb.summary())

	// Steady state: heartbeats alone, once the hosts' first reports of
	// their new guests (within an interval) have landed.
	time.Sleep(beat + time.Second)
	fleet.hb.reset()
	time.Sleep(time.Duration(steadyBeats) * beat)
	steady, steadyP99 := fleet.hb.summary(), fleet.hb.p99()
	fmt.Printf("steady, %d hosts beating every %v: %s\n", nHosts, beat, steady)

	// A share of the hosts goes silent.
	nLost := int(float64(nHosts) * lostShare)
	lostVMs := 0
	for _, h := range regs[:nLost] {
		lostVMs += h.stop()
	}
	silent := time.Now()
	detect := grace + lostAfter
	fmt.Printf("%d hosts (%d instances) silent; loomd declares them Lost after %v (grace + lost-after)\n", nLost, lostVMs, detect)
	fleet.hb.reset()
	if err := fleet.waitRunning(total, timeout+detect, "converging"); err != nil {
		return err
	}
	converge := time.Since(silent) - detect
	fmt.Printf("  all %d Running again %.1fs after the hosts went silent: converge %.1fs after Lost; heartbeats meanwhile: %s\n",
		total, time.Since(silent).Seconds(), converge.Seconds(), fleet.hb.summary())
	rss := peakRSS(ld.PID())
	fmt.Printf("loomd peak RSS %d MiB\n", rss>>20)
	fmt.Printf("bench fabric: place_s=%.1f converge_s=%.1f hb_p99_ms=%.1f hb_steady_p99_ms=%.1f rss_mb=%d hosts=%d instances=%d store_w_per_s=%.0f\n",
		place.Seconds(), converge.Seconds(), fleet.hbAll.p99(), steadyP99, rss>>20, nHosts, total, storeRate)
	return nil
}

// raiseFileLimit lets this process, and loomd after it, hold n open
// files: up to the hard limit, beyond it if allowed.
func raiseFileLimit(n uint64) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	if l.Cur >= n {
		return nil
	}
	want := l
	want.Cur, want.Max = n, max(l.Max, n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	} else if l.Max < n {
		return fmt.Errorf("%d open files needed, the hard limit is %d and raising it failed (%w): fewer -hosts, or raise it (ulimit -Hn)", n, l.Max, err)
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

// peakRSS is process pid's peak resident memory (VmHWM).
func peakRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// fleet is what the fake hosts share: heartbeat latencies and the count
// of guests reported Running.
type fleet struct {
	beat    time.Duration
	running atomic.Int64
	failed  atomic.Int64 // heartbeats that failed (the first few are logged)
	hb      latencies    // the current phase's
	hbAll   latencies    // the whole run's
}

// waitReady waits until n nodes are Ready.
func waitReady(ctx context.Context, op *client.Client, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		nodes, err := op.Nodes(ctx)
		if err != nil {
			return err
		}
		ready := 0
		for _, nd := range nodes {
			if nd.Phase == api.PhaseReady {
				ready++
			}
		}
		if ready >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d hosts Ready after %v", ready, n, timeout)
		}
		time.Sleep(time.Second)
	}
}

func (f *fleet) waitRunning(want int, timeout time.Duration, what string) error {
	deadline := time.Now().Add(timeout)
	last := time.Now()
	for f.running.Load() < int64(want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d instances Running after %v", what, f.running.Load(), want, timeout)
		}
		if time.Since(last) > 10*time.Second {
			fmt.Printf("  … %s: %d of %d Running\n", what, f.running.Load(), want)
			last = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) reset() {
	l.mu.Lock()
	l.d = nil
	l.mu.Unlock()
}

func (l *latencies) quantile(q float64) (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))], len(s)
}

func (l *latencies) p99() float64 {
	d, _ := l.quantile(0.99)
	return float64(d.Microseconds()) / 1000
}

func (l *latencies) summary() string {
	p50, n := l.quantile(0.5)
	p99, _ := l.quantile(0.99)
	return fmt.Sprintf("%d heartbeats, p50 %.1f ms, p99 %.1f ms", n, float64(p50.Microseconds())/1000, float64(p99.Microseconds())/1000)
}

// host is a fake host agent: guests it is given turn Running at once.
type host struct {
	c     *client.Client // as the host: its certificate
	reg   api.RegisterResponse
	fleet *fleet

	mu     sync.Mutex
	vms    map[string]*vm
	cancel context.CancelFunc
	done   sync.WaitGroup
}

type vm struct{ running bool }

func (h *host) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	h.cancel = cancel
	h.done.Add(2)
	go h.follow(ctx)
	go h.heartbeat(ctx)
}

// stop silences the host; it returns how many guests it ran.
func (h *host) stop() int {
	h.cancel()
	h.done.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, v := range h.vms {
		if v.running {
			n++
			h.fleet.running.Add(-1)
		}
	}
	return n
}

// follow long-polls the goal, as a host agent does, and starts or removes
// guests to match.
func (h *host) follow(ctx context.Context) {
	defer h.done.Done()
	have := int64(-1)
	for ctx.Err() == nil {
		g, changed, err := h.c.Goal(ctx, h.reg.NodeID, have, 30*time.Second)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		if !changed {
			continue
		}
		have = g.Incarnation
		h.mu.Lock()
		seen := map[string]bool{}
		for _, gv := range g.VMs {
			seen[gv.ID] = true
			v := h.vms[gv.ID]
			if v == nil {
				v = &vm{}
				h.vms[gv.ID] = v
			}
			run := gv.Desired == api.VMRunning
			if run != v.running {
				v.running = run
				h.fleet.running.Add(map[bool]int64{true: 1, false: -1}[run])
			}
		}
		for id, v := range h.vms {
			if !seen[id] {
				if v.running {
					h.fleet.running.Add(-1)
				}
				delete(h.vms, id)
			}
		}
		h.mu.Unlock()
	}
}

// heartbeat reports every guest's state each interval (spread out over
// the first one).
func (h *host) heartbeat(ctx context.Context) {
	defer h.done.Done()
	first := rand.N(h.fleet.beat)
	select {
	case <-ctx.Done():
		return
	case <-time.After(first):
	}
	t := time.NewTicker(h.fleet.beat)
	defer t.Stop()
	for {
		h.mu.Lock()
		st := api.Status{VMsComplete: true}
		now := time.Now()
		for id, v := range h.vms {
			s := api.VMStatus{ID: id, State: api.VMStateStopped, Observed: now}
			if v.running {
				s.State = api.VMStateRunning
			}
			st.VMs = append(st.VMs, s)
		}
		h.mu.Unlock()
		start := time.Now()
		if _, err := h.c.Status(ctx, h.reg.NodeID, st); err == nil {
			d := time.Since(start)
			h.fleet.hb.add(d)
			h.fleet.hbAll.add(d)
		} else if ctx.Err() == nil && h.fleet.failed.Add(1) <= 5 {
			log.Printf("heartbeat of %s: %v", h.reg.NodeID, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
