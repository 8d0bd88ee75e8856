package guestagent

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/console"
	"github.com/loomfabric/loom/agent/retry"
	"github.com/loomfabric/loom/agent/role"
)

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
	defer func() { _ = f.Close() }() // for the early returns; the last line closes it and checks
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, sum), io.LimitReader(s, h.Size))
	if err != nil || n != h.Size {
		return fmt.Errorf("package: %d of %d bytes: %v", n, h.Size, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != digest {
		return fmt.Errorf("package: sha256 %s, want %s: refusing to run it", got, digest)
	}
	return f.Close()
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
		_ = b.Wait(context.Background()) // no deadline: it only sleeps
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
		name, instance := "", a.instance
		if a.spec != nil {
			name = a.spec.Name
		}
		a.mu.Unlock()
		console.Mark(a.console, "guest-ready", "instance", instance, "role", name)
		a.send(channel.Message{Type: "health", State: "ready"})
		return
	}
	a.send(channel.Message{Type: "health", State: "unhealthy", Line: h})
}

// probe is the health check in force: the goal's (the service manifest's)
// or else the package's path, with the defaults.
type probe struct {
	path              string
	interval, timeout time.Duration
	failures          int
}

func probeOf(spec *role.Spec, goal *channel.GuestGoal) probe {
	p := probe{path: spec.Health, interval: time.Second, timeout: 2 * time.Second, failures: 1}
	if goal == nil || goal.Health == nil {
		return p
	}
	h := goal.Health
	p.path = h.Path
	if d, err := time.ParseDuration(h.Interval); err == nil && d > 0 {
		p.interval = d
	}
	if d, err := time.ParseDuration(h.Timeout); err == nil && d > 0 {
		p.timeout = d
	}
	if h.Failures > 0 {
		p.failures = h.Failures
	}
	return p
}

// healthLoop checks the role: its process lives and, if it has a health
// probe, answers it with 2xx. A role turns ready at its first good answer
// (looked for every 50 ms while it is not ready) and unhealthy after the
// probe's failures in a row (one probe every interval).
func (a *guestAgent) healthLoop(ctx context.Context) {
	failed := 0
	for ctx.Err() == nil {
		a.mu.Lock()
		spec, proc, healthy, goal := a.spec, a.proc, a.health == "ready", a.goal
		a.mu.Unlock()
		var p probe
		if spec != nil {
			p = probeOf(spec, goal)
		}
		if healthy {
			time.Sleep(cmp.Or(p.interval, time.Second))
		} else {
			time.Sleep(50 * time.Millisecond) // starting: say ready as soon as it is
		}
		if spec == nil || proc == nil {
			continue
		}
		if p.path == "" {
			a.setHealth("ready")
			continue
		}
		err := check(spec.Port, p)
		if err == nil {
			failed = 0
			a.setHealth("ready")
			continue
		}
		if failed++; !healthy || failed >= p.failures {
			a.setHealth("probe: " + err.Error())
		}
	}
}

// check runs one probe.
func check(port int, p probe) error {
	if port == 0 {
		return fmt.Errorf("GET %s: the role has no port (loom-role.json) to probe", p.path)
	}
	hc := &http.Client{Timeout: p.timeout}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, p.path))
	if err != nil {
		return err
	}
	_ = resp.Body.Close() // unread: only the status counts
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", p.path, resp.Status)
	}
	return nil
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
