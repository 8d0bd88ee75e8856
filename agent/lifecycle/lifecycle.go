// Package lifecycle is loom-agent's life on a node, in its two boot modes:
// maintenance (the uinit of the maintenance OS) and host (the uinit of the
// host OS). It never returns while its context lives.
//
// Steps, each announced on the console with a marker line
// "LOOM-MARK <step> key=value…" that tests and operators wait for:
//
//	cmdline      loom.fabric read from /proc/cmdline, the CA and the
//	             enrollment token from /etc/loom (package seed)
//	network      links up, DHCP lease applied               (retried with backoff)
//	inventory    hardware inventory taken
//	registered   POST /v1/nodes/register succeeded (mode=…) (retried with
//	             backoff): it sent a CSR for a key of this run's and got
//	             the node's certificate, which its later calls present
//	heartbeat    first heartbeat acknowledged; then one every interval,
//	             carrying the agent's phase (Imaging with progress, Imaged,
//	             Booting, Failed with a reason), so a lost report is repaired
//	             by the next. A 401 sends the agent back to register.
//	goal         a new goal state arrived (long-poll)
//
// Maintenance mode follows the goal: "provision" images the host partition
// (markers imaging, imaged or imaging-failed) and then hands over;
// "boot-host" hands over at once (marker kexec): the host kernel and
// initramfs are loaded from the "loom-host" partition and kexec'd, with a
// reboot as the fallback. Host mode registers as the same node (marker
// host-ready), runs the guests its goal lists (package guests; marker
// guests) and reports them with every heartbeat, and, when asked to
// provision again, reboots into the network boot, where the fabric serves
// the maintenance OS. With --fabric the host agent runs on an installed
// machine: the network is taken as it is (no DHCP) and SIGTERM stops it,
// leaving its guests running for the next agent to adopt. Guest mode is
// package guestagent.
package lifecycle

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loomfabric/loom/agent/accel"
	"github.com/loomfabric/loom/agent/cmdline"
	"github.com/loomfabric/loom/agent/console"
	"github.com/loomfabric/loom/agent/guests"
	"github.com/loomfabric/loom/agent/inventory"
	"github.com/loomfabric/loom/agent/netconf"
	"github.com/loomfabric/loom/agent/retry"
	"github.com/loomfabric/loom/agent/seed"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/pki"
)

// Version is the agent version reported at registration.
var Version = "dev"

// Config tunes the agent.
type Config struct {
	// Mode is api.ModeMaintenance (default) or api.ModeHost.
	Mode api.Mode
	// Cmdline is the kernel command line. Default: read /proc/cmdline.
	Cmdline string
	// Root is where sysfs and procfs are found. Default "/".
	Root string
	// Console receives the marker lines. Default os.Stderr.
	Console io.Writer
	// MaxBackoff caps retry delays. Default 30s.
	MaxBackoff time.Duration

	// Fabric and Token, if set, replace loom.fabric from the command line
	// and the seed's enrollment token, and the network is taken as it is
	// (no DHCP): a host agent run on an installed machine.
	Fabric, Token string
	// CA (PEM), if set, replaces the seed's CA certificate.
	CA []byte
	// IP is the address reported to the fabric when the network is taken
	// as it is. Default: the local address of the route to the fabric.
	IP string

	// Host mode: where guests live and what they boot.
	GuestDir    string // default /var/lib/loom
	GuestKernel string // default /guest/vmlinuz
	GuestInitrd string // default /guest/initramfs.cpio.xz
	// ColdGuests boots every guest from its kernel instead of resuming it
	// from the host's saved state of its machine (guests.Config.ColdBoot).
	ColdGuests bool
	// IngressIP is the host address web roles' ingress ports use (and
	// advertise). Default: the agent's IP.
	IngressIP string
	// GuestVCPUs is the vCPUs a host offers its guests (0: loom.vcpus= on
	// the command line, else its CPU count).
	GuestVCPUs int
	// Accel is how guests should run (auto probes). Default accel.Auto.
	Accel accel.Mode
	// AccelCache is where the accelerator verdict is cached. Default:
	// the guest directory.
	AccelCache string
}

// withDefaults is c with every unset field at its default.
func (c Config) withDefaults() Config {
	if c.Console == nil {
		c.Console = os.Stderr
	}
	if c.Root == "" {
		c.Root = "/"
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Mode == "" {
		c.Mode = api.ModeMaintenance
	}
	return c
}

// Agent is loom-agent on a node. Run may be called again after it fails:
// what outlives a run (the host's guest supervisor) is kept here.
type Agent struct {
	cfg Config

	guests  *guests.Supervisor // host mode, once started
	accel   api.Accel
	changed chan struct{} // a guest changed: report at once
	// reg is the current registration (nil before the first), and node
	// the client that calls as the node (its certificate): the host calls
	// the fabric for its guests' queues with them.
	reg  atomic.Pointer[api.RegisterResponse]
	node atomic.Pointer[client.Client]
}

// New returns the agent for cfg (which it copies).
func New(cfg Config) *Agent {
	return &Agent{cfg: cfg.withDefaults(), changed: make(chan struct{}, 1)}
}

// boot is what Run's steps learn, each from the ones before it.
type boot struct {
	line      string // the kernel command line
	cl        cmdline.Config
	ca        []byte    // the fabric's CA certificate (PEM)
	notBefore time.Time // the seed's, passed on to the host OS
	mac       string    // the boot interface's
	ip        string
	inv       api.Inventory
	fabric    *client.Client
}

// step is one named step of Run; its name prefixes its error.
type step struct {
	name string
	run  func(ctx context.Context, b *boot, log *slog.Logger) error
}

// steps are what Run does, in order. The last, serve, returns only when
// ctx ends.
func (a *Agent) steps() []step {
	return []step{
		{"cmdline", a.readCmdline},
		{"network", a.network},
		{"inventory", a.inventory},
		{"guests", a.startGuests},
		{"serve", a.serve},
	}
}

// Run is the agent: its steps, in order.
func (a *Agent) Run(ctx context.Context, log *slog.Logger) error {
	var b boot
	for _, st := range a.steps() {
		if err := st.run(ctx, &b, log); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s: %w", st.name, err)
		}
	}
	return ctx.Err()
}

// readCmdline reads loom.fabric from the kernel command line and the CA
// and enrollment token from the seed (or takes them from Config with
// --fabric).
func (a *Agent) readCmdline(_ context.Context, b *boot, _ *slog.Logger) error {
	c := &a.cfg
	line, err := cmdline.Read(c.Cmdline)
	if err != nil {
		return err
	}
	b.line = line
	if c.Fabric != "" {
		b.cl = cmdline.Config{Fabric: c.Fabric, Token: c.Token}
	} else {
		cl, err := cmdline.Parse(b.line)
		if err != nil {
			return err
		}
		b.cl = cl
	}
	sd, err := seed.Read(c.Root)
	if err != nil {
		return err
	}
	if now := time.Now(); sd.NotBefore.After(now) {
		// A clock behind the fabric's certificates (a dead CMOS battery):
		// none of them would be valid yet.
		if err := setClock(sd.NotBefore); err != nil {
			return fmt.Errorf("the clock says %s, before the fabric's certificates (%s), and cannot be set: %w", now.UTC().Format(time.RFC3339), sd.NotBefore.UTC().Format(time.RFC3339), err)
		}
		console.Mark(c.Console, "clock", "was", now.UTC().Format(time.RFC3339), "now", sd.NotBefore.UTC().Format(time.RFC3339))
	}
	b.cl.Token = cmp.Or(b.cl.Token, sd.Token)
	b.ca = c.CA
	if len(b.ca) == 0 {
		b.ca = sd.CA
	}
	b.notBefore = sd.NotBefore
	if b.cl.Token == "" {
		return fmt.Errorf("no enrollment token: /%s is missing (loomd appends it to the initramfs it serves) and loom.token= is not on the command line", seed.TokenFile)
	}
	if strings.Contains(b.cl.Fabric, "https://") && len(b.ca) == 0 {
		return fmt.Errorf("no CA certificate to check the fabric's with: /%s is missing (loomd appends it to the initramfs it serves)", seed.CAFile)
	}
	console.Mark(c.Console, "cmdline", "fabric", b.cl.Fabric, "bootmac", b.cl.BootMAC, "mode", c.Mode, "ca", len(b.ca) > 0)
	return nil
}

// network brings the links up and takes a DHCP lease (kept renewed),
// retrying until it works; with --fabric the network is taken as it is.
func (a *Agent) network(ctx context.Context, b *boot, log *slog.Logger) error {
	c := &a.cfg
	if c.Fabric != "" {
		ip, err := localIP(b.cl.Fabric, c.IP)
		if err != nil {
			return err
		}
		b.ip = ip
		console.Mark(c.Console, "network", "ip", ip, "managed", "by the OS")
		return nil
	}
	ncfg := netconf.Config{Prefer: b.cl.BootMAC}
	var lease *netconf.Lease
	for bo := (retry.Backoff{Max: c.MaxBackoff}); ; {
		var err error
		if lease, err = netconf.Up(ctx, ncfg, log); err == nil {
			break
		}
		log.Warn("network not up yet", "err", err)
		if err := bo.Wait(ctx); err != nil {
			return err
		}
	}
	console.Mark(c.Console, "network", "iface", lease.Interface, "mac", lease.MAC, "ip", lease.Addr.String(), "server", lease.Server)
	go func() {
		if err := netconf.Renew(ctx, lease, ncfg, log); err != nil && ctx.Err() == nil {
			log.Error("DHCP renewal stopped: the address will lapse", "err", err)
		}
	}()
	b.mac, b.ip = lease.MAC, lease.Addr.IP.String()
	return nil
}

// inventory takes the hardware inventory; without a lease's MAC, the
// first NIC with a link names the node.
func (a *Agent) inventory(_ context.Context, b *boot, _ *slog.Logger) error {
	inv, err := inventory.Collect(a.cfg.Root)
	if err != nil {
		return err
	}
	b.inv = inv
	console.Mark(a.cfg.Console, "inventory", "cpus", inv.CPU.Count, "memory", inv.Memory, "nics", len(inv.NICs), "disks", len(inv.Disks))
	if b.mac == "" {
		for _, n := range inv.NICs {
			if b.mac == "" || n.Link {
				b.mac = n.MAC
			}
			if n.Link {
				break
			}
		}
	}
	b.fabric = &client.Client{BaseURL: b.cl.Fabric, Token: b.cl.Token}
	if len(b.ca) > 0 {
		t, err := pki.ClientTLS(b.ca, nil)
		if err != nil {
			return fmt.Errorf("the fabric's CA certificate: %w", err)
		}
		b.fabric.TLS = t
	}
	return nil
}

// serve registers, then heartbeats and follows goals until the fabric
// forgets the node (register again) or ctx ends.
func (a *Agent) serve(ctx context.Context, b *boot, log *slog.Logger) error {
	c := &a.cfg
	reg := api.Registration{Mode: c.Mode, MAC: b.mac, IP: b.ip, AgentVersion: Version, Inventory: b.inv}
	if c.Mode == api.ModeHost {
		reg.Accel = &a.accel
		reg.GuestVCPUs = c.GuestVCPUs
		if reg.GuestVCPUs == 0 {
			reg.GuestVCPUs = b.cl.VCPUs
		}
	}
	// One key a run: each registration gets a new certificate for it.
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	if reg.CSR, err = pki.CSR(key, b.mac); err != nil {
		return err
	}
	for {
		resp := register(ctx, b.fabric, reg, c.MaxBackoff, log)
		if resp == nil {
			return ctx.Err()
		}
		nc, err := b.fabric.AsNode(key, resp.Certificate)
		if err != nil {
			// A certificate that does not go with the key: the fabric is
			// broken, not the agent; retry as for any failed registration.
			log.Error("the fabric's certificate for this node is unusable; registering again", "err", err)
			if retry.Sleep(ctx, c.MaxBackoff) != nil {
				return ctx.Err()
			}
			continue
		}
		console.Mark(c.Console, "registered", "node", resp.NodeID, "mode", c.Mode)
		a.reg.Store(resp)
		a.node.Store(nc)
		s := &session{cfg: c, ag: a, cmdline: b.line, seed: seed.Seed{CA: b.ca, Token: b.cl.Token, NotBefore: b.notBefore}, fabric: nc, reg: *resp, ip: b.ip, log: log}
		sctx, cancel := context.WithCancel(ctx)
		go s.goalLoop(sctx)
		s.heartbeat(sctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("the fabric no longer knows this node; registering again")
	}
}

func register(ctx context.Context, fabric *client.Client, reg api.Registration, max time.Duration, log *slog.Logger) *api.RegisterResponse {
	for b := (retry.Backoff{Max: max}); ; {
		resp, err := fabric.Register(ctx, reg)
		if err == nil {
			return &resp
		}
		log.Warn("registering with the fabric", "fabric", fabric.BaseURL, "err", err)
		if b.Wait(ctx) != nil {
			return nil
		}
	}
}

// session is one registration's worth of agent: heartbeats and goals.
type session struct {
	cfg     *Config
	ag      *Agent
	cmdline string
	seed    seed.Seed      // what the host OS is told when handed over to
	fabric  *client.Client // calls as the node
	reg     api.RegisterResponse
	ip      string
	log     *slog.Logger

	mu     sync.Mutex
	report api.Status // the phase the agent is in, sent with every heartbeat
}

func (s *session) setReport(st api.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.report = st
}

func (s *session) current() api.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.report
	st.IP = s.ip
	if s.ag.guests != nil {
		st.VMs, st.VMsComplete = s.ag.guests.Report(), true
	}
	if st.Progress != nil {
		p := *st.Progress
		st.Progress = &p
	}
	return st
}

// post sends the current report now (phase transitions do not wait for
// the next heartbeat). Errors are logged; the heartbeat repeats it anyway.
func (s *session) post(ctx context.Context) {
	if _, err := s.fabric.Status(ctx, s.reg.NodeID, s.current()); err != nil {
		s.log.Warn("reporting status", "err", err)
	}
}

// heartbeat posts the report until ctx ends or the fabric rejects the
// credential.
func (s *session) heartbeat(ctx context.Context) {
	interval := time.Duration(s.reg.HeartbeatInterval)
	if interval <= 0 {
		interval = 5 * time.Second
	}
	first := true
	b := retry.Backoff{Max: s.cfg.MaxBackoff}
	for {
		resp, err := s.fabric.Status(ctx, s.reg.NodeID, s.current())
		switch {
		case client.IsUnauthorized(err):
			return
		case err != nil:
			s.log.Warn("heartbeat", "err", err)
			if b.Wait(ctx) != nil {
				return
			}
			continue
		}
		b = retry.Backoff{Max: s.cfg.MaxBackoff}
		if first {
			console.Mark(s.cfg.Console, "heartbeat", "node", s.reg.NodeID, "interval", interval)
			if s.cfg.Mode == api.ModeHost {
				console.Mark(s.cfg.Console, "host-ready", "node", s.reg.NodeID)
			}
			first = false
		}
		if d := time.Duration(resp.HeartbeatInterval); d > 0 {
			interval = d
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		case <-s.ag.changed: // a guest changed: report at once
			time.Sleep(100 * time.Millisecond) // and gather what comes with it
		}
	}
}

// goalLoop long-polls the goal and acts on each new one.
func (s *session) goalLoop(ctx context.Context) {
	have := int64(-1)
	tried := map[int64]bool{} // provisioning generations attempted by this boot
	b := retry.Backoff{Max: s.cfg.MaxBackoff}
	for ctx.Err() == nil {
		g, changed, err := s.fabric.Goal(ctx, s.reg.NodeID, have, 30*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("goal", "err", err)
				_ = b.Wait(ctx) // fails only when ctx ends, which the loop checks
			}
			continue
		}
		b = retry.Backoff{Max: s.cfg.MaxBackoff}
		if !changed {
			continue
		}
		have = g.Incarnation
		console.Mark(s.cfg.Console, "goal", "incarnation", g.Incarnation, "action", g.Action, "provision", g.Provision)
		switch {
		case s.cfg.Mode == api.ModeHost:
			if s.ag.guests != nil {
				s.ag.guests.Apply(g.VMs)
			}
			if g.Action == api.ActionProvision || g.Action == api.ActionWipe {
				console.Mark(s.cfg.Console, "maintenance-reboot", "action", g.Action, "provision", g.Provision)
				s.log.Info("asked to provision or wipe: rebooting into the network boot", "action", g.Action)
				if err := reboot(); err != nil {
					s.log.Error("reboot failed", "err", err)
				}
			}
		case g.Action == api.ActionProvision && !tried[g.Provision]:
			tried[g.Provision] = true
			s.provision(ctx, g)
		case g.Action == api.ActionBootHost:
			s.handover(ctx, g)
		case g.Action == api.ActionWipe && !tried[-1]:
			tried[-1] = true // once per boot
			s.decommission(ctx)
		}
	}
}
