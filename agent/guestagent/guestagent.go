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
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	line := c.Cmdline
	if line == "" {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			log.Warn("no kernel command line: no instance name", "err", err)
		}
		line = string(b)
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
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
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
		b.Wait(ctx)
	}
}

func (a *guestAgent) send(m channel.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctrl != nil {
		channel.WriteFrame(a.ctrl, m)
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
	defer f.Close()
	g, err := channel.Dial(f, channel.Hello{Instance: a.instance, Agent: a.version}, map[string]channel.Handler{"ingress": a.ingress}, a.log)
	if err != nil {
		return err
	}
	defer g.Close()
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

// pullGoal fetches the goal and, the first time, the role package, and
// starts the role.
func (a *guestAgent) pullGoal(g *channel.Guest) error {
	s, err := g.Open("goal")
	if err != nil {
		return err
	}
	var goal channel.GuestGoal
	err = channel.ReadFrame(s, &goal)
	s.Close()
	if err != nil {
		return fmt.Errorf("goal: %w", err)
	}
	a.mu.Lock()
	a.goal = &goal
	started := a.started
	a.mu.Unlock()
	if started {
		return nil
	}
	if err := fetchPackage(g, goal.Digest); err != nil {
		return err
	}
	spec, err := role.Extract(guestPkgFile, guestRoleDir)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.spec, a.started = &spec, true
	a.mu.Unlock()
	go a.superviseRole(spec, goal)
	return nil
}

// fetchPackage copies the role package from the host and checks its sha256.
func fetchPackage(g *channel.Guest, digest string) error {
	s, err := g.Open("package")
	if err != nil {
		return err
	}
	defer s.Close()
	var h channel.PackageHeader
	if err := channel.ReadFrame(s, &h); err != nil {
		return fmt.Errorf("package: %w", err)
	}
	if h.Digest != digest {
		return fmt.Errorf("package: the host offers %s, the goal says %s", h.Digest, digest)
	}
	f, err := os.Create(guestPkgFile)
	if err != nil {
		return err
	}
	defer f.Close()
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, sum), io.LimitReader(s, h.Size))
	if err != nil || n != h.Size {
		return fmt.Errorf("package: %d of %d bytes: %v", n, h.Size, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != digest {
		return fmt.Errorf("package: sha256 %s, want %s: refusing to run it", got, digest)
	}
	return nil
}

// superviseRole runs the role and restarts it with backoff when it exits.
func (a *guestAgent) superviseRole(spec role.Spec, goal channel.GuestGoal) {
	b := retry.Backoff{Max: 30 * time.Second}
	for {
		cmd := exec.Command(filepath.Join(guestRoleDir, spec.Exec), spec.Args...)
		cmd.Dir = guestRoleDir
		cmd.Env = append(os.Environ(),
			"LOOM_INSTANCE="+goal.Instance, "LOOM_ROLE="+spec.Name,
			"LOOM_ENDPOINT=http://"+LocalEndpoint, "PORT="+strconv.Itoa(spec.Port))
		out := &lineWriter{emit: func(l string) {
			fmt.Fprintf(a.console, "[%s] %s\n", spec.Name, l)
			a.send(channel.Message{Type: "log", Line: spec.Name + ": " + l})
		}}
		cmd.Stdout, cmd.Stderr = out, out
		started := time.Now()
		if err := cmd.Start(); err != nil {
			a.setHealth("failed: " + err.Error())
		} else {
			a.mu.Lock()
			a.proc = cmd.Process
			a.mu.Unlock()
			console.Mark(a.console, "role-started", "role", spec.Name, "pid", cmd.Process.Pid)
			err = cmd.Wait()
			a.mu.Lock()
			a.proc = nil
			shutdown := a.shutdown
			a.mu.Unlock()
			if shutdown {
				return
			}
			a.setHealth(fmt.Sprintf("exited: %v", err))
			a.log.Warn("role exited; restarting", "role", spec.Name, "err", err)
		}
		if time.Since(started) > time.Minute {
			b = retry.Backoff{Max: 30 * time.Second}
		}
		b.Wait(context.Background())
	}
}

func (a *guestAgent) setHealth(h string) {
	a.mu.Lock()
	changed := a.health != h
	a.health = h
	a.mu.Unlock()
	if !changed {
		return
	}
	if h == "ready" {
		a.mu.Lock()
		name := ""
		if a.spec != nil {
			name = a.spec.Name
		}
		a.mu.Unlock()
		console.Mark(a.console, "guest-ready", "instance", a.instance, "role", name)
		a.send(channel.Message{Type: "health", State: "ready"})
		return
	}
	a.send(channel.Message{Type: "health", State: "unhealthy", Line: h})
}

// healthLoop checks the role: its process lives and, if it has a health
// path, answers it with 2xx.
func (a *guestAgent) healthLoop(ctx context.Context) {
	hc := &http.Client{Timeout: 2 * time.Second}
	for ctx.Err() == nil {
		a.mu.Lock()
		spec, proc, healthy := a.spec, a.proc, a.health == "ready"
		a.mu.Unlock()
		if healthy {
			time.Sleep(time.Second)
		} else {
			time.Sleep(50 * time.Millisecond) // starting: say ready as soon as it is
		}
		if spec == nil || proc == nil {
			continue
		}
		if spec.Health == "" {
			a.setHealth("ready")
			continue
		}
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d%s", spec.Port, spec.Health))
		if err != nil {
			a.setHealth("probe: " + err.Error())
			continue
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			a.setHealth("probe: " + resp.Status)
			continue
		}
		a.setHealth("ready")
	}
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
		p.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.Kill()
		}
	}
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
}

// ingress carries one host connection to the role's port.
func (a *guestAgent) ingress(_ context.Context, s net.Conn) {
	defer s.Close()
	a.mu.Lock()
	spec := a.spec
	a.mu.Unlock()
	if spec == nil || spec.Port == 0 {
		return
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", spec.Port))
	if err != nil {
		a.log.Warn("ingress: role not listening", "port", spec.Port, "err", err)
		return
	}
	defer c.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(c, s); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(s, c); s.Close(); done <- struct{}{} }()
	<-done
	<-done
}

// serveLocal is the role's local endpoint: GET /settings (JSON), /health.
func (a *guestAgent) serveLocal() {
	// Plain patterns: u-root builds the agent with the Go 1.21 mux rules
	// (no methods or wildcards in patterns).
	mux := http.NewServeMux()
	mux.HandleFunc("/settings", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		var settings map[string]string
		if a.goal != nil {
			settings = a.goal.Settings
		}
		a.mu.Unlock()
		if settings == nil {
			settings = map[string]string{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(settings)
	})
	mux.HandleFunc("/instance", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, a.instance)
	})
	// A role reaches the host's services (the queue and blob services of
	// later issues) through here: CONNECT-style, the answer is 200 and then
	// the raw stream, or 403 with the host's refusal.
	mux.HandleFunc("/connect/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		a.mu.Lock()
		g := a.ch
		a.mu.Unlock()
		if g == nil {
			http.Error(w, "no channel to the host right now", http.StatusServiceUnavailable)
			return
		}
		st, err := g.Open(strings.TrimPrefix(r.URL.Path, "/connect/"))
		if errors.Is(err, channel.ErrRefused) {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer st.Close()
		rc := http.NewResponseController(w)
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		conn, buf, err := rc.Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		go func() { io.Copy(st, buf); st.Close() }()
		io.Copy(conn, st)
	})
	for {
		err := http.ListenAndServe(LocalEndpoint, mux)
		a.log.Warn("local endpoint", "err", err)
		time.Sleep(time.Second)
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

// lineWriter splits output into lines (bounded to 4 KiB each).
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			if len(w.buf) > 4096 {
				w.emit(string(w.buf))
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}
