package guestagent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/role"
)

// TestHealthProbe: the manifest's probe replaces the package's path; a
// role turns ready at its first good answer and unhealthy only after the
// probe's failures in a row; a probe of a role with no port says so.
func TestHealthProbe(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	var asked atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Store(r.URL.Path)
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	a := &guestAgent{log: slog.New(slog.DiscardHandler), console: io.Discard,
		spec: &role.Spec{Name: "web", Port: port, Health: "/package-path"},
		proc: &os.Process{Pid: os.Getpid()},
		goal: &channel.GuestGoal{Health: &channel.HealthProbe{Path: "/manifest-path", Interval: "100ms", Timeout: "1s", Failures: 3}}}
	health := func() string { a.mu.Lock(); defer a.mu.Unlock(); return a.health }
	wait := func(what string, d time.Duration, ok func(string) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !ok(health()) {
			if time.Since(start) > d {
				t.Fatalf("not %s after %v: %q", what, d, health())
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(start)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.healthLoop(ctx)

	wait("ready", 2*time.Second, func(h string) bool { return h == "ready" })
	if p, _ := asked.Load().(string); p != "/manifest-path" {
		t.Errorf("probed %q, want the manifest's /manifest-path", p)
	}
	// Failing: unhealthy after 3 probes 100 ms apart, not at the first.
	status.Store(503)
	took := wait("unhealthy", 2*time.Second, func(h string) bool { return h != "ready" })
	if took < 250*time.Millisecond {
		t.Errorf("unhealthy %v after the role started failing: want 3 failures 100 ms apart", took)
	}
	if h := health(); !strings.Contains(h, "GET /manifest-path: 503") {
		t.Errorf("health %q, want the failed probe", h)
	}
	// Back: ready at the next good answer.
	status.Store(204)
	wait("ready again", time.Second, func(h string) bool { return h == "ready" })

	// One bad answer among good ones leaves it ready.
	status.Store(500)
	time.Sleep(120 * time.Millisecond)
	status.Store(200)
	time.Sleep(300 * time.Millisecond)
	if h := health(); h != "ready" {
		t.Errorf("after one failed probe of 3 allowed: %q, want ready", h)
	}

	// Without the manifest's probe: the package's path, one failure.
	if p := probeOf(a.spec, &channel.GuestGoal{}); p.path != "/package-path" || p.failures != 1 || p.interval != time.Second || p.timeout != 2*time.Second {
		t.Errorf("the package's probe: %+v", p)
	}
	if err := check(0, probe{path: "/h", timeout: time.Second}); err == nil || !strings.Contains(err.Error(), "no port") {
		t.Errorf("a probe of a role with no port: %v", err)
	}
}
