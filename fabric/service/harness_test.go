package service_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/loomd"
	"github.com/loomfabric/loom/fabric/pki"
)

// fabric is a real loomd (embedded etcd, in-process) for the service
// tests, with fake host agents.
type fabric struct {
	t      *testing.T
	cfg    *loomd.Config
	sock   string
	op     *client.Client // operator
	enroll *client.Client
	stop   func()
	hosts  []*fakeHost
}

func startFabric(t *testing.T, cfg *loomd.Config) *fabric {
	t.Helper()
	if testing.Short() {
		t.Skip("runs loomd")
	}
	dir := t.TempDir()
	f := &fabric{t: t, cfg: cfg, sock: filepath.Join(dir, "api.sock")}
	f.cfg.DataDir = filepath.Join(dir, "data")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.cfg.API, f.cfg.APIUnix = ln.Addr().String(), f.sock // the same port at every start
	ln.Close()
	f.cfg.HeartbeatInterval = max(f.cfg.HeartbeatInterval, 300*time.Millisecond)
	f.cfg.Grace = max(f.cfg.Grace, time.Second)
	f.start()
	t.Cleanup(func() {
		for _, h := range f.hosts {
			h.Stop()
		}
		f.stop()
	})
	if _, err := f.op.AddImage(context.Background(), "work", strings.NewReader(strings.Repeat("\x00", 4096)), nil); err != nil {
		t.Fatal(err)
	}
	return f
}

// start runs loomd (again, on the same data directory).
func (f *fabric) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ended := make(chan struct{})
	var startErr error
	go func() { startErr = f.cfg.Start(ctx, nil); close(ended); done <- startErr }()
	f.stop = func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("loomd: %v", err)
		}
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(f.cfg.DataDir, name))
		return strings.TrimSpace(string(b))
	}
	f.op = &client.Client{BaseURL: "unix://" + f.sock}
	// Generous: in make test the embedded etcd starts beside VM tests on
	// two cores. A loomd that failed to start fails the wait at once.
	waitFor(f.t, 2*time.Minute, "loomd's API", func() bool {
		select {
		case <-ended:
			f.t.Fatalf("loomd ended at start: %v", startErr)
		default:
		}
		f.op.Token = read(loomd.OperatorTokenFile)
		_, err := f.op.Nodes(ctx)
		return f.op.Token != "" && err == nil
	})
	// Hosts call over TLS, with their certificates.
	tc, err := pki.ClientTLS([]byte(read(loomd.CAFile)), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.enroll = &client.Client{BaseURL: "https://" + f.cfg.API, Token: read(loomd.EnrollTokenFile), TLS: tc}
}

// restart stops loomd and starts it again on its data directory.
func (f *fabric) restart() {
	f.stop()
	f.start()
}

// addHost registers a fake host agent (4 CPUs, 2 GiB, in rack) and starts
// its heartbeat.
func (f *fabric) addHost(rack string) *fakeHost {
	f.t.Helper()
	mac := fmt.Sprintf("52:54:00:cc:%02x:%02x", len(f.hosts)/256, len(f.hosts)%256)
	r, nc, err := f.enroll.Enroll(context.Background(), api.Registration{Mode: api.ModeHost, MAC: mac, AgentVersion: "fake",
		Accel: &api.Accel{Accel: "tcg", CPU: "max"},
		Inventory: api.Inventory{CPU: api.CPU{Count: 4, Model: "x"}, Memory: 2 << 30,
			NICs: []api.NIC{{Name: "eth0", MAC: mac, Link: true}}}})
	if err != nil {
		f.t.Fatal(err)
	}
	if rack != "" {
		if _, err := f.op.ImportRack(context.Background(), []byte("rack,mac\n"+rack+","+mac+"\n")); err != nil {
			f.t.Fatal(err)
		}
	}
	h := &fakeHost{c: nc, reg: r, vms: map[string]*fakeVM{}}
	h.Start()
	f.hosts = append(f.hosts, h)
	return h
}

// instances lists a service's instances (failing the test on error).
func (f *fabric) instances(svc string) []api.Instance {
	f.t.Helper()
	ins, err := f.op.Instances(context.Background(), svc)
	if err != nil {
		f.t.Fatal(err)
	}
	return ins
}

// fakeHost is a host agent without QEMU: every 100 ms it reads its goal
// and reports its guests, which start (Starting, then Running after
// BootTime), stop, reboot and go as asked. A guest whose package is in
// Broken never turns Running.
type fakeHost struct {
	c   *client.Client
	reg api.RegisterResponse

	mu       sync.Mutex
	vms      map[string]*fakeVM
	Broken   map[string]bool // packages whose role never turns healthy
	BootTime time.Duration
	// Serve: each guest gets a host port that answers "hello from ID"
	// (the ingress of a web role).
	Serve  bool
	cancel context.CancelFunc
	done   chan struct{}
}

type fakeVM struct {
	goal     api.GoalVM
	ln       net.Listener
	state    api.VMState
	reason   string
	since    time.Time // booting since
	rebooted int64
	restarts int
	bytes    uint64 // its channel's counter: 1000 more each step Running
}

func (h *fakeHost) ID() string { return h.reg.NodeID }

// Start (again) heartbeating.
func (h *fakeHost) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		for ctx.Err() == nil {
			h.step(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
}

// Stop heartbeating (the host goes silent; its guests are frozen).
func (h *fakeHost) Stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

// Crash kills a guest's "QEMU": the host restarts it (Crashed, then
// booting again).
func (h *fakeHost) Crash(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v := h.vms[id]; v != nil {
		v.state, v.reason, v.restarts = api.VMStateCrashed, "QEMU exited; restarting", v.restarts+1
		v.since = time.Now()
	}
}

func (h *fakeHost) step(ctx context.Context) {
	g, _, err := h.c.Goal(ctx, h.reg.NodeID, -1, 0)
	if err != nil {
		return
	}
	now := time.Now()
	h.mu.Lock()
	seen := map[string]bool{}
	var st []api.VMStatus
	for _, gv := range g.VMs {
		seen[gv.ID] = true
		v := h.vms[gv.ID]
		if gv.Desired == api.VMDeleted {
			h.forget(gv.ID)
			continue
		}
		if v == nil {
			v = &fakeVM{state: api.VMStateStarting, since: now, rebooted: gv.RebootGen}
			if h.Serve {
				v.ln = serveHello(gv.ID)
			}
			h.vms[gv.ID] = v
		}
		switch {
		case gv.Desired == api.VMStopped:
			v.state, v.reason = api.VMStateStopped, "stopped on request"
		case v.state == api.VMStateStopped || v.state == api.VMStateCrashed:
			v.state, v.reason, v.since = api.VMStateStarting, "", now
		case gv.RebootGen != v.rebooted:
			v.state, v.reason, v.since, v.rebooted = api.VMStateStarting, "rebooted on request", now, gv.RebootGen
		case v.state == api.VMStateStarting && now.Sub(v.since) >= h.BootTime:
			if h.Broken[gv.Package] {
				v.reason = "role unhealthy: probe: 500 Internal Server Error"
			} else {
				v.state, v.reason = api.VMStateRunning, ""
			}
		}
		v.goal = gv
		if v.state == api.VMStateRunning {
			v.bytes += 1000
		}
		vs := api.VMStatus{ID: gv.ID, State: v.state, Reason: v.reason, Restarts: v.restarts, Rebooted: v.rebooted, Observed: now,
			Usage: &api.Usage{ChannelBytes: v.bytes}}
		if v.ln != nil {
			vs.Endpoint = v.ln.Addr().String()
		}
		st = append(st, vs)
	}
	for id := range h.vms {
		if !seen[id] {
			h.forget(id)
		}
	}
	h.mu.Unlock()
	// Errors show in the tests as instances that do not turn Ready.
	_, _ = h.c.Status(ctx, h.reg.NodeID, api.Status{VMs: st, VMsComplete: true})
}

func (h *fakeHost) forget(id string) {
	if v := h.vms[id]; v != nil && v.ln != nil {
		_ = v.ln.Close() // only its accept loop is left to notice
	}
	delete(h.vms, id)
}

// Refuse closes a guest's host port while the host still reports it
// Running (a port that refuses connections).
func (h *fakeHost) Refuse(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v := h.vms[id]; v != nil && v.ln != nil {
		_ = v.ln.Close() // only its accept loop is left to notice
	}
}

// serveHello listens on a loopback port and answers every connection with
// "hello from ID".
func serveHello(id string) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = fmt.Fprintf(c, "hello from %s\n", id) // the client may be gone
			_ = c.Close()                                // done with it
		}
	}()
	return ln
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
