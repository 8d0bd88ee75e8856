// Package guests is the host agent's guest supervisor: it reconciles the
// guests in the host's goal state with the QEMU processes it runs, serves
// each guest's channel (the guest's only route out), carries ingress
// connections to web roles, apportions each guest a control group and
// reports what it observes.
//
// Per guest, under Dir/guests/ID/ (see package vmm for QEMU's files):
//
//	disk.qcow2      a qcow2 overlay on Dir/base.qcow2 (the guest's scratch disk)
//	state.json      what outlives a host agent restart: restarts, reboots
//	                done, the ingress port, QEMU's last event (state.go)
//
// Role packages are fetched from the fabric once, checked against the
// sha256 in the goal, and kept in Dir/packages/DIGEST.tar.
//
// The files, by concern:
//
//	supervisor.go   the guests of one host: start (adoption), apply, report
//	guest.go        one guest's loop: reconcile towards its goal
//	restart.go      the reconcile decision and crash backoff (pure)
//	state.go        the per-guest persisted state, written atomically
//	services.go     the host end of the guest's channel and its services
//	ingress.go      host ports carried into web roles
//	packages.go     role packages, fetched and checked
//	disks.go        the guest's overlay disk and the disk under it
//	usage.go        metering: CPU, memory and channel bytes
//
// A restarted host agent adopts the guests it finds running (their pidfile
// and QMP socket) instead of starting them again.
package guests

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/loomfabric/loom/agent/snapshot"
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
	// ColdBoot boots every guest from its kernel. By default a guest is
	// resumed from a saved state of a template guest of the same machine
	// (agent/snapshot, kept under Dir/snapshots), built at the first start
	// of each machine; a guest whose resume fails boots cold.
	ColdBoot bool
	// Queue carries a guest's queue call to the fabric (nil: the host
	// offers no queues). A *client.StatusError's code and message go back
	// to the guest as they are.
	Queue func(ctx context.Context, vm string, req api.QueueRequest) (api.QueueReply, error)
	// OnChange is called when a guest's observed state changes.
	OnChange func()
	Log      *slog.Logger
}

// withDefaults is c with every unset field at its default.
func (c Config) withDefaults() Config {
	if c.IngressIP == "" {
		c.IngressIP = "127.0.0.1"
	}
	if c.ChannelLimit == 0 {
		c.ChannelLimit = 64 << 20
	}
	if c.DiskSize == "" {
		c.DiskSize = "1G"
	}
	if c.DiskBytesPerSec == 0 {
		c.DiskBytesPerSec = 200 << 20
	}
	if c.StopGrace == 0 {
		c.StopGrace = 20 * time.Second
	}
	if c.OnChange == nil {
		c.OnChange = func() {}
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
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
	snaps  *snapshot.Cache
}

// New returns a supervisor; Start adopts running guests.
func New(cfg Config) *Supervisor {
	cfg = cfg.withDefaults()
	s := &Supervisor{
		cfg: cfg, log: cfg.Log, guests: map[string]*guest{},
		mgr: &vmm.Manager{Dir: filepath.Join(cfg.Dir, "guests"), QEMU: cfg.QEMU, Accel: cfg.Accel, Log: cfg.Log},
	}
	if !cfg.ColdBoot {
		s.snaps = &snapshot.Cache{Dir: filepath.Join(cfg.Dir, "snapshots"), QEMU: cfg.QEMU, Accel: cfg.Accel, Log: cfg.Log}
	}
	return s
}

// Start adopts the guests a previous host agent left running; they wait
// for the goal to say what to do with them. Every guest directory found
// gets its persisted state back, running or not.
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
	dirs, err := os.ReadDir(s.mgr.Dir)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		g := s.newGuest(d.Name())
		st, err := loadState(g.dir)
		if err != nil {
			s.log.Warn("guest state unreadable; counting from zero", "vm", g.id, "err", err)
		}
		g.saved = st
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
