// Package guestagent is loom-agent inside a guest (its "guest" mode, the
// guest's uinit). The guest has no network interface but lo; the channel
// to its host is its only way out. The agent connects to the host over the
// channel, says hello, reports the interfaces it sees, pulls its goal and
// role package, runs and supervises the role, reports its health, carries
// the host's ingress streams to the role's port, serves the role's local
// endpoint on 127.0.0.1:7070, and powers the guest off when the host asks.
//
// Markers on the console: channel, role-started, guest-ready, shutdown.
package guestagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/cmdline"
	"github.com/loomfabric/loom/agent/console"
	"github.com/loomfabric/loom/agent/retry"
	"github.com/loomfabric/loom/agent/role"
)

// Guest mode paths and the local endpoint.
const (
	guestRoleDir  = "/role"
	guestPkgFile  = "/role.tar"
	LocalEndpoint = "127.0.0.1:7070"
)

// channelPort finds the device of the named virtio-serial port. Without
// udev there is no /dev/virtio-ports/NAME: the name is in sysfs.
func channelPort(name string) (string, error) {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(n)), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %s (is virtio_console loaded?)", name)
}

// guestAgent is loom-agent inside a guest.
type guestAgent struct {
	console  io.Writer
	log      *slog.Logger
	instance string
	version  string

	mu       sync.Mutex
	goal     *channel.GuestGoal
	spec     *role.Spec
	proc     *os.Process
	ctrl     net.Conn
	ch       *channel.Guest
	health   string
	started  bool
	shutdown bool
}

// Config is what the guest agent needs; every field may be left zero.
type Config struct {
	// Console is where markers go (default stderr).
	Console io.Writer
	// Cmdline is the kernel command line (default /proc/cmdline).
	Cmdline string
	// Version is the agent's, said in its hello.
	Version string
}

// Run is the guest agent; it returns only when ctx ends. A lost channel
// session is dialled again.
func Run(ctx context.Context, c Config, log *slog.Logger) error {
	if c.Console == nil {
		c.Console = os.Stderr
	}
	line, err := cmdline.Read(c.Cmdline)
	if err != nil {
		log.Warn("no instance name", "err", err)
	}
	a := &guestAgent{console: c.Console, log: log, version: c.Version}
	nicIP := ""
	for _, kv := range cmdline.Split(line) {
		switch kv[0] {
		case "loom.instance":
			a.instance = kv[1]
		case "loom.nic-ip":
			nicIP = kv[1]
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		// The role's local endpoint and ingress live on loopback.
		log.Warn("loopback not up", "err", err)
	}
	if nicIP != "" {
		// Only bench/channel starts a guest with a NIC (to compare the
		// channel with it); Loom's guests have none.
		if err := nicUp(nicIP); err != nil {
			log.Warn("loom.nic-ip", "err", err)
		}
	}
	go a.serveLocal()
	go a.healthLoop(ctx)
	for b := (retry.Backoff{Max: 5 * time.Second}); ; {
		err := a.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("channel session ended; connecting again", "err", err)
		if err := b.Wait(ctx); err != nil {
			return err
		}
	}
}

func (a *guestAgent) send(m channel.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctrl == nil {
		return
	}
	// A lost message goes with its session: the next session starts with
	// a fresh report.
	if err := channel.WriteFrame(a.ctrl, m); err != nil {
		a.log.Debug("message to the host lost", "err", err)
	}
}

func (a *guestAgent) session(ctx context.Context) error {
	port, err := channelPort("org.loom.channel.0")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // the serial port; the session's end is what matters
	if err := a.waitHost(ctx, f); err != nil {
		return err
	}
	a.mu.Lock()
	hello := channel.Hello{Instance: a.instance, Agent: a.version}
	a.mu.Unlock()
	g, err := channel.Dial(f, hello, map[string]channel.Handler{"ingress": a.ingress}, a.log)
	if err != nil {
		return err
	}
	defer func() { _ = g.Close() }()
	a.fromHost(g.Host)
	console.Mark(a.console, "channel", "port", port, "host-instance", g.Host.Instance)
	ctrl, err := g.Open("control")
	if err != nil {
		return err
	}
	defer ctrl.Close()
	a.mu.Lock()
	a.ctrl, a.ch = ctrl, g
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.ctrl, a.ch = nil, nil
		a.mu.Unlock()
	}()
	var names []string
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	a.send(channel.Message{Type: "interfaces", Interfaces: names})
	go a.readControl(ctrl)

	if err := a.pullGoal(g); err != nil {
		a.send(channel.Message{Type: "health", State: "failed", Line: err.Error()})
		return err
	}
	a.mu.Lock()
	h := a.health
	a.mu.Unlock()
	if h != "" {
		a.send(channel.Message{Type: "health", State: h})
	}
	<-g.Done()
	return errors.New("the host closed the channel")
}

// readControl handles the host's control messages.
func (a *guestAgent) readControl(s net.Conn) {
	for {
		var m channel.Message
		if err := channel.ReadFrame(s, &m); err != nil {
			return
		}
		if m.Type == "shutdown" {
			a.powerOff()
		}
	}
}

// powerOff stops the role (SIGTERM, then SIGKILL after 5s) and powers off.
func (a *guestAgent) powerOff() {
	fmt.Fprintln(a.console, "LOOM-MARK shutdown")
	a.mu.Lock()
	a.shutdown = true
	p := a.proc
	a.mu.Unlock()
	if p != nil {
		// Errors here mean the role has ended already; either way the
		// guest powers off below.
		_ = p.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = p.Kill()
		}
	}
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		// The host's QMP powerdown and its stop timeout take over.
		a.log.Error("power off", "err", err)
	}
}

// nicUp gives the first non-loopback link the address cidr.
func nicUp(cidr string) error {
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	for range 50 {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				continue
			}
			if err := netlink.AddrAdd(l, addr); err != nil {
				return err
			}
			return netlink.LinkSetUp(l)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("no network interface")
}
