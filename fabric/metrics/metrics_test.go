package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/dhcp"
	"github.com/loomfabric/loom/scripts/vmtest"
)

func fakeSources() Sources {
	return Sources{
		DHCP: func() dhcp.Stats {
			return dhcp.Stats{
				Received: map[string]int64{"discover": 7, "request": 5},
				Sent:     map[string]int64{"offer": 7, "ack": 4, "nak": 1},
				Dropped:  map[string]int64{dhcp.DropMalformed: 2},
				Pools:    []dhcp.PoolUse{{Subnet: "10.0.0.0/24", Size: 100, Leased: 4, Offered: 3}},
			}
		},
		Nodes: func(context.Context) ([]api.Node, error) {
			return []api.Node{
				{ID: "a", Phase: api.PhaseReady},
				{ID: "b", Phase: api.PhaseImaging, Progress: &api.Progress{Bytes: 1000, Total: 4000}},
				{ID: "c", Phase: api.PhaseImaging, Progress: &api.Progress{Bytes: 500, Total: 4000}},
			}, nil
		},
		VMs: func(context.Context) ([]api.VM, error) {
			return []api.VM{
				{ID: "vm-1", Node: "a", VMStatus: api.VMStatus{State: api.VMStateRunning, Usage: &api.Usage{CPUSeconds: 12.5, MemoryBytes: 64 << 20, ChannelBytes: 4096}}},
				{ID: "vm-2", Node: "a"}, // placed, not reported yet
			}, nil
		},
		StoreSize: func(context.Context) (int64, error) { return 1 << 20, nil },
		Leading:   func() bool { return true },
	}
}

// TestState: the scrape-time figures come out as the sources say, with
// every phase and state present (at 0 where nothing is in it); a source
// that fails costs only its own metrics.
func TestState(t *testing.T) {
	m := New(fakeSources(), nil)
	want := `
# HELP loom_store_size_bytes Size of this replica's store (etcd's database file).
# TYPE loom_store_size_bytes gauge
loom_store_size_bytes 1.048576e+06
# HELP loom_nodes Nodes, by phase.
# TYPE loom_nodes gauge
loom_nodes{phase="Booting"} 0
loom_nodes{phase="Decommissioned"} 0
loom_nodes{phase="Discovered"} 0
loom_nodes{phase="Enrolled"} 0
loom_nodes{phase="Failed"} 0
loom_nodes{phase="Imaged"} 0
loom_nodes{phase="Imaging"} 2
loom_nodes{phase="Ready"} 1
loom_nodes{phase="Registered"} 0
loom_nodes{phase="Unreachable"} 0
loom_nodes{phase="Wiping"} 0
# HELP loom_nodes_imaging_bytes Image data written so far by the nodes imaging now.
# TYPE loom_nodes_imaging_bytes gauge
loom_nodes_imaging_bytes 1500
# HELP loom_vms VMs, by state.
# TYPE loom_vms gauge
loom_vms{state="Crashed"} 0
loom_vms{state="Failed"} 0
loom_vms{state="Pending"} 1
loom_vms{state="Running"} 1
loom_vms{state="Starting"} 0
loom_vms{state="Stopped"} 0
# HELP loom_vm_cpu_seconds_total CPU time a guest has used, as its host last reported it.
# TYPE loom_vm_cpu_seconds_total counter
loom_vm_cpu_seconds_total{node="a",vm="vm-1"} 12.5
# HELP loom_vm_memory_bytes Memory a guest uses, as its host last reported it.
# TYPE loom_vm_memory_bytes gauge
loom_vm_memory_bytes{node="a",vm="vm-1"} 6.7108864e+07
# HELP loom_dhcp_pool_leased_addresses Addresses of a subnet's pool under an unexpired lease.
# TYPE loom_dhcp_pool_leased_addresses gauge
loom_dhcp_pool_leased_addresses{subnet="10.0.0.0/24"} 4
# HELP loom_dhcp_sent_total DHCP answers made, by type (offer, ack, nak).
# TYPE loom_dhcp_sent_total counter
loom_dhcp_sent_total{type="ack"} 4
loom_dhcp_sent_total{type="nak"} 1
loom_dhcp_sent_total{type="offer"} 7
# HELP loom_leader 1 if this replica leads the fabric, else 0.
# TYPE loom_leader gauge
loom_leader 1
`
	names := []string{"loom_store_size_bytes", "loom_nodes", "loom_nodes_imaging_bytes", "loom_vms", "loom_vm_cpu_seconds_total", "loom_vm_memory_bytes",
		"loom_dhcp_pool_leased_addresses", "loom_dhcp_sent_total", "loom_leader"}
	err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...)
	if err != nil {
		t.Error(err)
	}
	// The store's size fails: it is missing, the rest is served (and
	// the handler says what failed in its log, not in the body).
	src := fakeSources()
	src.StoreSize = func(context.Context) (int64, error) { return 0, errors.New("etcd is away") }
	body := scrape(t, New(src, nil).Handler())
	if strings.Contains(body, "loom_store_size_bytes ") {
		t.Error("loom_store_size_bytes served although its source failed")
	}
	for _, s := range []string{`loom_dhcp_received_total{type="discover"} 7`, `loom_dhcp_dropped_total{reason="malformed"} 2`, "go_goroutines ", "process_cpu_seconds_total "} {
		if !strings.Contains(body, s) {
			t.Errorf("exposition lacks %q", s)
		}
	}
	promtool(t, body)
}

// TestAPI: requests are counted by their route's pattern (not their
// path), with their status; unmatched paths share one label; in-flight
// requests are seen while they run.
func TestAPI(t *testing.T) {
	m := New(Sources{}, nil)
	mux := http.NewServeMux()
	release := make(chan struct{})
	inside := make(chan struct{})
	mux.HandleFunc("GET /v1/nodes/{id}/goal", func(w http.ResponseWriter, r *http.Request) {
		close(inside)
		<-release
		w.WriteHeader(http.StatusNotModified)
	})
	mux.HandleFunc("GET /v1/nodes/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "missing" {
			http.Error(w, "no such node", http.StatusNotFound)
			return
		}
		_, _ = io.WriteString(w, "{}")
	})
	srv := httptest.NewServer(m.API(mux))
	defer srv.Close()
	get := func(path string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	done := make(chan struct{})
	go func() { defer close(done); get("/v1/nodes/n-1/goal") }()
	<-inside
	if got := testutil.ToFloat64(m.inFlight.WithLabelValues("GET /v1/nodes/{id}/goal")); got != 1 {
		t.Errorf("goal long-polls in flight = %v, want 1", got)
	}
	close(release)
	<-done
	for _, p := range []string{"/v1/nodes/a", "/v1/nodes/b", "/v1/nodes/missing", "/nope", "/nope/either"} {
		get(p)
	}
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{"GET /v1/nodes/{id}", "200", 2},
		{"GET /v1/nodes/{id}", "404", 1},
		{"GET /v1/nodes/{id}/goal", "304", 1},
		{"unmatched", "404", 2},
	} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(c.route, c.code)); got != c.want {
			t.Errorf("requests{route=%q,code=%s} = %v, want %v", c.route, c.code, got, c.want)
		}
	}
	if got := testutil.ToFloat64(m.inFlight.WithLabelValues("GET /v1/nodes/{id}/goal")); got != 0 {
		t.Errorf("in flight after the long-poll = %v, want 0", got)
	}
	m.Imaged(4000, 30*time.Second)
	m.ImagingFailed("weird")
	m.StoreRequest("txn", time.Millisecond)
	body := scrape(t, m.Handler())
	for _, s := range []string{"loom_imaging_bytes_total 4000", "loom_imaging_duration_seconds_count 1", `loom_imaging_failures_total{cause="other"} 1`,
		`loom_imaging_failures_total{cause="verify"} 0`, `loom_store_request_duration_seconds_count{op="txn"} 1`} {
		if !strings.Contains(body, s) {
			t.Errorf("exposition lacks %q", s)
		}
	}
	promtool(t, body)
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// promtool checks an exposition with Prometheus' own linter.
func promtool(t *testing.T, body string) {
	t.Helper()
	vmtest.RequireTools(t, "make deps installs Debian's prometheus", "promtool")
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader([]byte(body))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
