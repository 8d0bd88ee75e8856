// Package guests is the host agent's guest supervisor: it reconciles the
// guests in the host's goal state with the QEMU processes it runs, serves
// each guest's channel (the guest's only route out), carries ingress
// connections to web roles, apportions each guest a control group and
// reports what it observes.
//
// Per guest, under Dir/guests/ID/ (see package vmm for QEMU's files):
//
//	disk.qcow2      a qcow2 overlay on Dir/base.qcow2 (the guest's scratch disk)
//	ingress.port    the host port of a web role's ingress (kept across restarts)
//
// Role packages are fetched from the fabric once, checked against the
// sha256 in the goal, and kept in Dir/packages/DIGEST.tar.
//
// Reconciliation, every second and on every change, per guest:
//
//	desired running, no QEMU     → start it (after a crash: backoff 1s, 2s, 4s … 60s)
//	desired running, RebootGen   → system_reset
//	desired stopped              → "shutdown" over the channel, system_powerdown,
//	                               quit after a grace period
//	desired deleted              → stop, remove its files and control group
//
// A restarted host agent adopts the guests it finds running (their pidfile
// and QMP socket) instead of starting them again.
package guests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loomfabric/loom/agent/cgroup"
	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/role"
	"github.com/loomfabric/loom/agent/vmm"
	"github.com/loomfabric/loom/fabric/api"
)

// Fetcher downloads a blob path from the fabric.
type Fetcher func(ctx context.Context, path string, w io.Writer) error

// Config wires the supervisor.
type Config struct {
	// Dir is the host's guest directory (on the data partition). Required.
	Dir string
	// Kernel and Initrd are the guest OS. Required.
	Kernel, Initrd string
	// Fetch downloads role packages. Required.
	Fetch Fetcher
	// IngressIP is the host address ingress listeners bind and advertise.
	// Default 127.0.0.1.
	IngressIP string
	// ChannelLimit caps each guest's channel in bytes/s. Default 64 MiB/s.
	ChannelLimit int
	// DiskSize of the base guest disk. Default 1 GiB.
	DiskSize string
	// DiskBytesPerSec caps each guest's reads and writes on the disk under
	// Dir (cgroup io.max). Default 200 MiB/s; negative: no cap.
	DiskBytesPerSec int64
	// StopGrace is how long a guest may take to power down. Default 20s.
	StopGrace time.Duration
	// QEMU binary (default qemu-system-x86_64).
	QEMU string
	// Accel is how guests run (accel.Decide). Default: TCG.
	Accel api.Accel
	// QEMUArgs and Cmdline are added to every guest's QEMU arguments and
	// kernel command line. Not for production: bench/channel uses them to
	// give a guest a NIC to compare the channel with.
	QEMUArgs []string
	Cmdline  string
	// OnChange is called when a guest's observed state changes.
	OnChange func()
	Log      *slog.Logger
}

// Supervisor runs the guests of one host.
type Supervisor struct {
	cfg Config
	mgr *vmm.Manager
	log *slog.Logger

	mu     sync.Mutex
	guests map[string]*guest
	ctx    context.Context
	diskMu sync.Mutex // one base disk, made once
	ioDev  string     // MAJ:MIN of the disk under Dir ("" if none)
}

// New returns a supervisor; Start adopts running guests.
func New(cfg Config) *Supervisor {
	if cfg.IngressIP == "" {
		cfg.IngressIP = "127.0.0.1"
	}
	if cfg.ChannelLimit == 0 {
		cfg.ChannelLimit = 64 << 20
	}
	if cfg.DiskSize == "" {
		cfg.DiskSize = "1G"
	}
	if cfg.DiskBytesPerSec == 0 {
		cfg.DiskBytesPerSec = 200 << 20
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 20 * time.Second
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func() {}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{
		cfg: cfg, log: log, guests: map[string]*guest{},
		mgr: &vmm.Manager{Dir: filepath.Join(cfg.Dir, "guests"), QEMU: cfg.QEMU, Accel: cfg.Accel, Log: log},
	}
}

// Start adopts the guests a previous host agent left running; they wait
// for the goal to say what to do with them.
func (s *Supervisor) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx = ctx
	if err := os.MkdirAll(s.mgr.Dir, 0o700); err != nil {
		return err
	}
	if s.cfg.DiskBytesPerSec > 0 {
		s.ioDev = diskOf(s.cfg.Dir)
	}
	dirs, _ := os.ReadDir(s.mgr.Dir)
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		g := s.newGuest(d.Name())
		v, err := s.mgr.Adopt(ctx, d.Name())
		if err != nil {
			s.log.Info("guest not running; left for the goal to decide", "vm", d.Name(), "err", err)
		} else {
			s.log.Info("guest adopted", "vm", d.Name(), "pid", v.PID)
			g.adopt(v)
		}
		s.guests[g.id] = g
		go g.loop(ctx)
	}
	return nil
}

// Apply sets the desired guests (from the goal). Guests the host has but
// the goal does not list are removed.
func (s *Supervisor) Apply(vms []api.GoalVM) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]bool{}
	for _, v := range vms {
		want[v.ID] = true
		g, ok := s.guests[v.ID]
		if !ok {
			g = s.newGuest(v.ID)
			s.guests[v.ID] = g
			go g.loop(s.ctx)
		}
		g.setGoal(v)
	}
	for id, g := range s.guests {
		if !want[id] {
			g.setGoal(api.GoalVM{ID: id, Desired: api.VMDeleted})
		}
	}
}

// Report is the observed state of every guest.
func (s *Supervisor) Report() []api.VMStatus {
	s.mu.Lock()
	gs := make([]*guest, 0, len(s.guests))
	for _, g := range s.guests {
		gs = append(gs, g)
	}
	s.mu.Unlock()
	out := make([]api.VMStatus, 0, len(gs))
	for _, g := range gs {
		if st, ok := g.status(); ok {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Refused is how many streams guest id tried to open to services it is
// not offered.
func (s *Supervisor) Refused(id string) int64 {
	s.mu.Lock()
	g := s.guests[id]
	s.mu.Unlock()
	if g == nil {
		return 0
	}
	return g.ch.Refused.Load()
}

func (s *Supervisor) forget(id string) {
	s.mu.Lock()
	delete(s.guests, id)
	s.mu.Unlock()
	s.cfg.OnChange()
}

func (s *Supervisor) newGuest(id string) *guest {
	g := &guest{id: id, s: s, dir: filepath.Join(s.mgr.Dir, id), kick: make(chan struct{}, 1), state: api.VMStateStarting}
	g.ch = &channel.Host{Instance: id, Limit: s.cfg.ChannelLimit, Log: s.log}
	g.ch.OnHello = func(h channel.Hello) {
		s.log.Info("guest said hello", "vm", id, "agent", h.Agent)
	}
	g.ch.Services = map[string]channel.Handler{
		"control": g.control,
		"goal":    g.serveGoal,
		"package": g.servePackage,
	}
	return g
}

// guest is one guest's supervision.
type guest struct {
	id   string
	s    *Supervisor
	dir  string
	ch   *channel.Host
	kick chan struct{}

	mu         sync.Mutex
	goal       *api.GoalVM
	vm         *vmm.VM
	cg         *cgroup.Group
	pkg        string // local path of the package
	spec       role.Spec
	ingress    net.Listener
	state      string
	reason     string
	restarts   int
	rebooted   int64
	interfaces []string
	ctrl       net.Conn // the guest's control stream
	stopping   bool     // we are stopping it: its exit is no crash
	crashes    int      // consecutive, for the backoff
	nextStart  time.Time
	startedAt  time.Time
	gone       bool
}

func (g *guest) setGoal(v api.GoalVM) {
	g.mu.Lock()
	if g.goal == nil || v.Desired != api.VMDeleted || g.goal.Desired != api.VMDeleted {
		vv := v
		if v.Desired == api.VMDeleted && g.goal != nil {
			vv = *g.goal
			vv.Desired = api.VMDeleted
		}
		g.goal = &vv
	}
	g.mu.Unlock()
	g.poke()
}

func (g *guest) poke() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (g *guest) set(state, reason string) {
	g.mu.Lock()
	changed := g.state != state || g.reason != reason
	g.state, g.reason = state, reason
	g.mu.Unlock()
	if changed {
		g.s.log.Info("guest state", "vm", g.id, "state", state, "reason", reason)
		g.s.cfg.OnChange()
	}
}

func (g *guest) status() (api.VMStatus, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone {
		return api.VMStatus{}, false
	}
	st := api.VMStatus{ID: g.id, State: g.state, Reason: g.reason, Restarts: g.restarts, Rebooted: g.rebooted, Interfaces: g.interfaces}
	if g.ingress != nil {
		st.Endpoint = g.ingress.Addr().String()
	}
	u := &api.Usage{ChannelBytes: g.ch.Bytes.Load()}
	if g.cg != nil {
		cu := g.cg.Usage()
		u.CPUSeconds, u.MemoryBytes = cu.CPUSeconds, cu.MemoryBytes
	}
	st.Usage = u
	return st, true
}

// adopt takes over a running guest found at start.
func (g *guest) adopt(v *vmm.VM) {
	g.vm = v
	g.startedAt = time.Now()
	g.state = api.VMStateStarting
	if b, err := os.ReadFile(filepath.Join(g.dir, "rebooted")); err == nil {
		g.rebooted, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if b, err := os.ReadFile(filepath.Join(g.dir, "restarts")); err == nil {
		g.restarts, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if cg, err := cgroup.New(g.id, cgroup.Limits{}); err == nil {
		g.cg = cg
	}
	go g.serveChannel(g.s.ctx, v)
	go g.watchEvents(v)
}

func (g *guest) loop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if done := g.reconcile(ctx); done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-g.kick:
		case <-t.C:
		}
	}
}

// reconcile does one step towards the goal; true once the guest is gone.
func (g *guest) reconcile(ctx context.Context) bool {
	g.mu.Lock()
	goal, v := g.goal, g.vm
	g.mu.Unlock()
	if goal == nil {
		return false // adopted, waiting for the goal
	}
	alive := v != nil && v.Alive()
	if v != nil && !alive {
		g.exited(v)
		v = nil
	}
	switch goal.Desired {
	case api.VMDeleted:
		if alive {
			g.stop(v)
		}
		g.remove()
		return true
	case api.VMStopped:
		if alive {
			g.stop(v)
		}
		g.set(api.VMStateStopped, "stopped on request")
		return false
	}
	if !alive {
		g.mu.Lock()
		wait := time.Until(g.nextStart)
		g.mu.Unlock()
		if wait > 0 {
			return false
		}
		if err := g.start(ctx, *goal); err != nil {
			g.s.log.Warn("starting guest", "vm", g.id, "err", err)
			g.mu.Lock()
			g.crashes++
			g.nextStart = time.Now().Add(backoff(g.crashes))
			g.mu.Unlock()
			g.set(api.VMStateFailed, err.Error())
		}
		return false
	}
	g.mu.Lock()
	adopted := g.pkg == ""
	g.mu.Unlock()
	if adopted {
		// Adopted from a previous host agent: its package and ingress.
		if err := g.prepare(ctx, *goal); err != nil {
			g.s.log.Warn("adopted guest", "vm", g.id, "err", err)
		}
	}
	g.mu.Lock()
	reboot := goal.RebootGen > g.rebooted
	if time.Since(g.startedAt) > 5*time.Minute {
		g.crashes = 0
	}
	g.mu.Unlock()
	if reboot {
		if err := v.Reboot(); err != nil {
			g.s.log.Warn("rebooting guest", "vm", g.id, "err", err)
			return false
		}
		g.mu.Lock()
		g.rebooted = goal.RebootGen
		g.mu.Unlock()
		os.WriteFile(filepath.Join(g.dir, "rebooted"), []byte(strconv.FormatInt(goal.RebootGen, 10)), 0o600)
		g.set(api.VMStateStarting, "rebooted on request")
	}
	return false
}

func backoff(n int) time.Duration {
	d := time.Second << min(n-1, 6)
	return min(d, time.Minute)
}

// exited handles a QEMU process that is gone.
func (g *guest) exited(v *vmm.VM) {
	g.mu.Lock()
	stopping := g.stopping
	g.vm = nil
	g.ctrl = nil
	if !stopping {
		g.crashes++
		g.restarts++
		g.nextStart = time.Now().Add(backoff(g.crashes))
		os.WriteFile(filepath.Join(g.dir, "restarts"), []byte(strconv.Itoa(g.restarts)), 0o600)
	}
	g.mu.Unlock()
	v.Close()
	if !stopping {
		reason := "QEMU exited"
		if b, err := os.ReadFile(filepath.Join(g.dir, "last-event")); err == nil {
			reason = "QEMU exited after " + strings.TrimSpace(string(b))
		}
		g.s.log.Warn("guest died; restarting with backoff", "vm", g.id, "pid", v.PID, "reason", reason)
		g.set(api.VMStateCrashed, reason+"; restarting")
	}
}

func (g *guest) stop(v *vmm.VM) {
	g.mu.Lock()
	g.stopping = true
	ctrl := g.ctrl
	g.mu.Unlock()
	if ctrl != nil {
		channel.WriteFrame(ctrl, channel.Message{Type: "shutdown"})
	}
	if err := v.Stop(g.s.cfg.StopGrace); err != nil {
		g.s.log.Warn("stopping guest", "vm", g.id, "err", err)
	}
	v.Close()
	g.mu.Lock()
	g.vm, g.ctrl, g.stopping = nil, nil, false
	g.mu.Unlock()
}

func (g *guest) remove() {
	g.mu.Lock()
	if g.ingress != nil {
		g.ingress.Close()
		g.ingress = nil
	}
	cg := g.cg
	g.gone = true
	g.mu.Unlock()
	if cg != nil {
		cg.Remove()
	}
	os.RemoveAll(g.dir)
	g.s.log.Info("guest removed", "vm", g.id)
	g.s.forget(g.id)
}

// prepare fetches the role package and opens the ingress port.
func (g *guest) prepare(ctx context.Context, goal api.GoalVM) error {
	pkg, err := g.s.fetchPackage(ctx, goal)
	if err != nil {
		return err
	}
	spec, err := role.Read(pkg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		return err
	}
	g.mu.Lock()
	g.pkg, g.spec = pkg, spec
	g.mu.Unlock()
	if spec.Port > 0 {
		return g.listenIngress()
	}
	return nil
}

// start prepares and boots the guest.
func (g *guest) start(ctx context.Context, goal api.GoalVM) error {
	if err := g.prepare(ctx, goal); err != nil {
		return err
	}
	disk, err := g.s.overlay(ctx, g.dir)
	if err != nil {
		return err
	}
	spec := g.spec
	g.set(api.VMStateStarting, "")
	v, err := g.s.mgr.Start(ctx, vmm.Spec{
		Name: g.id, VCPUs: goal.VCPUs, MemoryMB: goal.MemoryMB,
		Kernel: g.s.cfg.Kernel, Initrd: g.s.cfg.Initrd, Disk: disk,
		Cmdline: g.s.cfg.Cmdline, ExtraArgs: g.s.cfg.QEMUArgs,
	})
	if err != nil {
		return err
	}
	os.Remove(filepath.Join(g.dir, "last-event"))
	// QEMU's own overhead (device models, TCG translation cache) on top of
	// the guest's memory.
	lim := cgroup.Limits{CPUs: goal.VCPUs, MemoryBytes: uint64(goal.MemoryMB+256) << 20}
	if g.s.ioDev != "" {
		lim.IODevice, lim.IOBytesPerSec = g.s.ioDev, uint64(g.s.cfg.DiskBytesPerSec)
	}
	cg, err := cgroup.New(g.id, lim)
	if err != nil {
		g.s.log.Warn("guest control group", "vm", g.id, "err", err)
	}
	if cg != nil {
		if err := cg.Add(v.PID); err != nil {
			g.s.log.Warn("guest runs outside its control group", "vm", g.id, "err", err)
		}
	}
	g.mu.Lock()
	g.vm, g.cg, g.startedAt = v, cg, time.Now()
	g.interfaces = nil
	g.mu.Unlock()
	go g.serveChannel(ctx, v)
	go g.watchEvents(v)
	g.s.log.Info("guest started", "vm", g.id, "pid", v.PID, "vcpus", goal.VCPUs, "memoryMB", goal.MemoryMB, "role", spec.Name)
	return nil
}

// serveChannel runs the host end of the guest's channel while its QEMU
// lives, connecting again whenever a session ends (a guest reboot or a
// guest agent restart starts a new one).
func (g *guest) serveChannel(ctx context.Context, v *vmm.VM) {
	for ctx.Err() == nil && v.Alive() {
		conn, err := v.Channel()
		if err == nil {
			err = g.ch.Serve(ctx, conn)
			conn.Close()
			if err != nil {
				g.s.log.Debug("channel session ended", "vm", g.id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// watchEvents turns QMP events into state.
func (g *guest) watchEvents(v *vmm.VM) {
	events, err := v.Events(context.Background())
	if err != nil {
		return
	}
	for e := range events {
		switch e.Event {
		case "SHUTDOWN", "GUEST_PANICKED", "RESET", "STOP":
			g.s.log.Info("guest event", "vm", g.id, "event", e.Event, "data", e.Data)
			os.WriteFile(filepath.Join(g.dir, "last-event"), []byte(e.Event), 0o600)
			g.mu.Lock()
			stopping := g.stopping
			g.mu.Unlock()
			switch {
			case e.Event == "GUEST_PANICKED":
				g.set(api.VMStateCrashed, "the guest kernel panicked")
			case e.Event == "RESET":
				g.set(api.VMStateStarting, "the guest reset")
			case e.Event == "SHUTDOWN" && !stopping:
				g.set(api.VMStateCrashed, "the guest powered off by itself")
			}
			g.poke()
		}
	}
}

// control serves the guest's control stream.
func (g *guest) control(_ context.Context, s net.Conn) {
	defer s.Close()
	g.mu.Lock()
	g.ctrl = s
	g.mu.Unlock()
	for {
		var m channel.Message
		if err := channel.ReadFrame(s, &m); err != nil {
			return
		}
		// The guest is not trusted: bound what it can make the host report.
		if len(m.Interfaces) > 64 {
			m.Interfaces = m.Interfaces[:64]
		}
		for i, n := range m.Interfaces {
			if len(n) > 32 {
				m.Interfaces[i] = n[:32]
			}
		}
		if len(m.Line) > 512 {
			m.Line = m.Line[:512]
		}
		switch m.Type {
		case "interfaces":
			g.mu.Lock()
			g.interfaces = m.Interfaces
			g.mu.Unlock()
			g.s.cfg.OnChange()
		case "health":
			switch m.State {
			case "ready":
				g.set(api.VMStateRunning, "")
			default:
				g.set(api.VMStateStarting, "role "+m.State+": "+m.Line)
			}
		case "log":
			g.s.log.Info("guest", "vm", g.id, "line", m.Line)
		}
	}
}

func (g *guest) serveGoal(_ context.Context, s net.Conn) {
	defer s.Close()
	g.mu.Lock()
	goal := g.goal
	g.mu.Unlock()
	if goal == nil {
		return
	}
	channel.WriteFrame(s, channel.GuestGoal{Instance: g.id, Package: goal.Package, Digest: goal.PackageDigest, Settings: goal.Settings})
}

func (g *guest) servePackage(_ context.Context, s net.Conn) {
	defer s.Close()
	g.mu.Lock()
	pkg, goal := g.pkg, g.goal
	g.mu.Unlock()
	f, err := os.Open(pkg)
	if err != nil || goal == nil {
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return
	}
	if channel.WriteFrame(s, channel.PackageHeader{Size: fi.Size(), Digest: goal.PackageDigest}) != nil {
		return
	}
	io.Copy(s, f)
}

// listenIngress opens (or reopens, on the same port) the host port that
// carries TCP connections to the role.
func (g *guest) listenIngress() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ingress != nil {
		return nil
	}
	portFile := filepath.Join(g.dir, "ingress.port")
	addr := net.JoinHostPort(g.s.cfg.IngressIP, "0")
	if b, err := os.ReadFile(portFile); err == nil {
		addr = net.JoinHostPort(g.s.cfg.IngressIP, strings.TrimSpace(string(b)))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ingress for %s: %w", g.id, err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	os.WriteFile(portFile, []byte(port), 0o600)
	g.ingress = ln
	go g.serveIngress(ln)
	return nil
}

func (g *guest) serveIngress(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			st, err := g.ch.Open("ingress")
			if err != nil {
				g.s.log.Warn("ingress: no way into the guest", "vm", g.id, "err", err)
				return
			}
			defer st.Close()
			pipe(c, st)
		}()
	}
}

// pipe copies both ways until both directions are done.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

// fetchPackage returns the local copy of a role package, downloading and
// checking it first if needed.
func (s *Supervisor) fetchPackage(ctx context.Context, goal api.GoalVM) (string, error) {
	if goal.PackageDigest == "" || goal.PackageURL == "" {
		return "", fmt.Errorf("package %q is not in the fabric's image store", goal.Package)
	}
	dir := filepath.Join(s.cfg.Dir, "packages")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, goal.PackageDigest+".tar")
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	tmp, err := os.CreateTemp(dir, ".fetch-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	if err := s.cfg.Fetch(ctx, goal.PackageURL, io.MultiWriter(tmp, h)); err != nil {
		return "", fmt.Errorf("fetching package %s: %w", goal.Package, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != goal.PackageDigest {
		return "", fmt.Errorf("package %s: sha256 %s, want %s: refusing it", goal.Package, got, goal.PackageDigest)
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}

// overlay makes the guest's qcow2 overlay on the base disk.
func (s *Supervisor) overlay(ctx context.Context, dir string) (string, error) {
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	disk := filepath.Join(dir, "disk.qcow2")
	if _, err := os.Stat(disk); err == nil {
		return disk, nil
	}
	base := filepath.Join(s.cfg.Dir, "base.qcow2")
	if _, err := os.Stat(base); errors.Is(err, os.ErrNotExist) {
		if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", base+".tmp", s.cfg.DiskSize).CombinedOutput(); err != nil {
			return "", fmt.Errorf("base guest disk: qemu-img: %v: %s", err, out)
		}
		if err := os.Rename(base+".tmp", base); err != nil {
			return "", err
		}
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, disk).CombinedOutput(); err != nil {
		return "", fmt.Errorf("guest overlay: qemu-img: %v: %s", err, out)
	}
	return disk, nil
}

// diskOf is "MAJ:MIN" of the whole disk holding dir (io.max takes disks,
// not partitions), or "" when dir is on no block device (tmpfs, overlay).
func diskOf(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return ""
	}
	maj, min := unix.Major(st.Dev), unix.Minor(st.Dev)
	if maj == 0 {
		return ""
	}
	sys, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", maj, min))
	if err != nil {
		return ""
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(sys), "dev")); err == nil {
			return strings.TrimSpace(string(b))
		}
		return ""
	}
	return fmt.Sprintf("%d:%d", maj, min)
}
