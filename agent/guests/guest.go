package guests

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/loomfabric/loom/agent/cgroup"
	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/role"
	"github.com/loomfabric/loom/agent/vmm"
	"github.com/loomfabric/loom/fabric/api"
)

// guest is one guest's supervision: a loop that reconciles it with its
// goal, the host end of its channel, and what the host observes of it.
type guest struct {
	id   string
	s    *Supervisor
	dir  string
	ch   *channel.Host
	kick chan struct{}

	saveMu sync.Mutex // one save of saved at a time, in order

	mu         sync.Mutex
	goal       *api.GoalVM
	vm         *vmm.VM
	cg         *cgroup.Group
	pkg        string // local path of the package ("" until prepared)
	spec       role.Spec
	ingress    net.Listener
	state      api.VMState
	reason     string
	saved      persisted // written through persist
	restart    restartPolicy
	interfaces []string
	ctrl       net.Conn // the guest's control stream
	stopping   bool     // we are stopping it: its exit is no crash
	startedAt  time.Time
	gone       bool
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
		"queue":   g.serveQueue,
	}
	return g
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

func (g *guest) set(state api.VMState, reason string) {
	g.mu.Lock()
	changed := g.state != state || g.reason != reason
	g.state, g.reason = state, reason
	g.mu.Unlock()
	if changed {
		g.s.log.Info("guest state", "vm", g.id, "state", state, "reason", reason)
		g.s.cfg.OnChange()
	}
}

// persist changes the guest's persisted state and saves it when the
// change changed something. A save that fails is logged: the guest runs
// on, and a host agent restarted before the next good save reports older
// counters.
func (g *guest) persist(change func(*persisted)) {
	g.saveMu.Lock()
	defer g.saveMu.Unlock()
	g.mu.Lock()
	before := g.saved
	change(&g.saved)
	st, gone := g.saved, g.gone
	g.mu.Unlock()
	if gone || st == before {
		return // its directory is removed, or nothing to write
	}
	if err := st.save(g.dir); err != nil {
		g.s.log.Warn("guest state not saved", "vm", g.id, "err", err)
	}
}

func (g *guest) status() (api.VMStatus, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone {
		return api.VMStatus{}, false
	}
	st := api.VMStatus{ID: g.id, State: g.state, Reason: g.reason, Restarts: g.saved.Restarts, Rebooted: g.saved.Rebooted, Interfaces: g.interfaces, Boot: g.saved.Boot}
	if g.ingress != nil {
		st.Endpoint = g.ingress.Addr().String()
	}
	st.Usage = g.usage()
	return st, true
}

// adopt takes over a running guest found at start.
func (g *guest) adopt(v *vmm.VM) {
	g.vm = v
	g.startedAt = time.Now()
	g.state = api.VMStateStarting
	if cg, err := cgroup.New(g.id, cgroup.Limits{}); err == nil {
		g.cg = cg
	} else {
		g.s.log.Warn("adopted guest: no control group to meter it by", "vm", g.id, "err", err)
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

// reconcile does one step towards the goal (decide says which); true once
// the guest is gone.
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
	now := time.Now()
	g.mu.Lock()
	if alive {
		g.restart.running(g.startedAt, now)
	}
	o := observed{HasGoal: true, Desired: goal.Desired, Alive: alive, Now: now,
		NextStart: g.restart.next, RebootGen: goal.RebootGen, Rebooted: g.saved.Rebooted}
	adopted := alive && g.pkg == ""
	g.mu.Unlock()

	step := decide(o)
	if adopted && (step == stepIdle || step == stepReboot) {
		// Adopted from a previous host agent: its package and ingress.
		if err := g.prepare(ctx, *goal); err != nil {
			g.s.log.Warn("adopted guest", "vm", g.id, "err", err)
		}
	}
	switch step {
	case stepRemove:
		if alive {
			g.stop(v)
		}
		g.remove()
		return true
	case stepStop:
		g.stop(v)
		g.set(api.VMStateStopped, "stopped on request")
	case stepStopped:
		g.set(api.VMStateStopped, "stopped on request")
	case stepStart:
		if err := g.start(ctx, *goal); err != nil {
			g.s.log.Warn("starting guest", "vm", g.id, "err", err)
			g.mu.Lock()
			g.restart.failed(time.Now())
			g.mu.Unlock()
			g.set(api.VMStateFailed, err.Error())
		}
	case stepReboot:
		// The goal may name a new package or settings (an upgrade): the
		// guest agent asks for them again as the guest boots.
		if err := g.prepare(ctx, *goal); err != nil {
			g.s.log.Warn("not rebooting guest into its new package", "vm", g.id, "err", err)
			g.set(api.VMStateRunning, "reboot held back: "+err.Error())
			return false
		}
		if err := v.Reboot(); err != nil {
			g.s.log.Warn("rebooting guest", "vm", g.id, "err", err)
			return false
		}
		// Starting before Rebooted: a report never shows the new
		// generation with the old version's Running.
		g.set(api.VMStateStarting, "rebooted on request")
		g.persist(func(st *persisted) { st.Rebooted = goal.RebootGen })
	}
	return false
}

// exited handles a QEMU process that is gone.
func (g *guest) exited(v *vmm.VM) {
	g.mu.Lock()
	stopping := g.stopping
	g.vm = nil
	g.ctrl = nil
	if !stopping {
		g.restart.failed(time.Now())
	}
	g.mu.Unlock()
	if err := v.Close(); err != nil {
		g.s.log.Debug("closing the dead guest's QMP", "vm", g.id, "err", err)
	}
	if stopping {
		return
	}
	var last string
	g.persist(func(st *persisted) {
		st.Restarts++
		last = st.LastEvent
	})
	reason := "QEMU exited"
	if last != "" {
		reason = "QEMU exited after " + last
	}
	g.s.log.Warn("guest died; restarting with backoff", "vm", g.id, "pid", v.PID, "reason", reason)
	g.set(api.VMStateCrashed, reason+"; restarting")
}

func (g *guest) stop(v *vmm.VM) {
	g.mu.Lock()
	g.stopping = true
	ctrl := g.ctrl
	g.mu.Unlock()
	if ctrl != nil {
		if err := channel.WriteFrame(ctrl, channel.Message{Type: "shutdown"}); err != nil {
			g.s.log.Info("guest agent not told to shut down; powering the guest down", "vm", g.id, "err", err)
		}
	}
	if err := v.Stop(g.s.cfg.StopGrace); err != nil {
		g.s.log.Warn("stopping guest", "vm", g.id, "err", err)
	}
	if err := v.Close(); err != nil {
		g.s.log.Debug("closing the stopped guest's QMP", "vm", g.id, "err", err)
	}
	g.mu.Lock()
	g.vm, g.ctrl, g.stopping = nil, nil, false
	g.mu.Unlock()
}

func (g *guest) remove() {
	g.mu.Lock()
	if g.ingress != nil {
		_ = g.ingress.Close() // only the accept loop is left to notice
		g.ingress = nil
	}
	cg := g.cg
	g.gone = true
	g.mu.Unlock()
	if cg != nil {
		if err := cg.Remove(); err != nil {
			g.s.log.Warn("guest's control group left behind", "vm", g.id, "err", err)
		}
	}
	if err := os.RemoveAll(g.dir); err != nil {
		g.s.log.Warn("guest's files left behind", "vm", g.id, "dir", g.dir, "err", err)
	}
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
	v, boot, err := g.s.boot(ctx, vmm.Spec{
		Name: g.id, VCPUs: goal.VCPUs, MemoryMB: goal.MemoryMB,
		Kernel: g.s.cfg.Kernel, Initrd: g.s.cfg.Initrd, Disk: disk,
		Cmdline: g.s.cfg.Cmdline, ExtraArgs: g.s.cfg.QEMUArgs,
	})
	if err != nil {
		return err
	}
	g.persist(func(st *persisted) { st.LastEvent, st.Boot = "", boot })
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

// watchEvents turns QMP events into state.
func (g *guest) watchEvents(v *vmm.VM) {
	events, err := v.Events(context.Background())
	if err != nil {
		g.s.log.Warn("guest's QMP events unavailable", "vm", g.id, "err", err)
		return
	}
	for e := range events {
		switch e.Event {
		case "SHUTDOWN", "GUEST_PANICKED", "RESET", "STOP":
			g.s.log.Info("guest event", "vm", g.id, "event", e.Event, "data", e.Data)
			g.persist(func(st *persisted) { st.LastEvent = e.Event })
			g.mu.Lock()
			stopping := g.stopping
			g.mu.Unlock()
			switch {
			case e.Event == "GUEST_PANICKED":
				g.set(api.VMStateCrashed, "the guest kernel panicked")
			case e.Event == "RESET":
				// A reset boots the kernel again, whatever the guest
				// was resumed from.
				g.persist(func(st *persisted) { st.Boot = "cold" })
				g.set(api.VMStateStarting, "the guest reset")
			case e.Event == "SHUTDOWN" && !stopping:
				g.set(api.VMStateCrashed, "the guest powered off by itself")
			}
			g.poke()
		}
	}
}
