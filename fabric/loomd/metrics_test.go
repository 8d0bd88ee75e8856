package loomd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/agent/imaging"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/metrics"
	"github.com/loomfabric/loom/scripts/vmtest"
)

// TestMetrics: /metrics moves with real traffic. A node images over
// mutual TLS from loomd's blob (the maintenance agent's writer, onto a
// file), another fails; their goal long-polls, heartbeats and the
// operator's calls are counted by route; the store's requests are timed.
// Any operator token reads it, no token gets nothing, and promtool finds
// the exposition valid.
func TestMetrics(t *testing.T) {
	cfg := &Config{DataDir: t.TempDir(), API: freeAddr(t)}
	defer inProcess(t, cfg)()
	op, _ := operator(t, cfg)
	ctx := context.Background()

	img := make([]byte, 3<<20)
	_, _ = rand.Read(img[:1<<20]) // then 2 MiB of zeros: a hole
	m, err := op.AddImage(ctx, "host", bytes.NewReader(img), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.PutProfile(ctx, api.Profile{Name: "p", Image: "host"}); err != nil {
		t.Fatal(err)
	}
	ec := enroller(t, cfg, op)
	node := func(mac string) (string, *client.Client, api.Goal) {
		t.Helper()
		r, nc, err := ec.Enroll(ctx, api.Registration{MAC: mac, Inventory: api.Inventory{NICs: []api.NIC{{Name: "eth0", MAC: mac}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := op.Provision(ctx, r.NodeID, "p"); err != nil {
			t.Fatal(err)
		}
		g, ok, err := nc.Goal(ctx, r.NodeID, 0, 0)
		if err != nil || !ok || g.Action != api.ActionProvision {
			t.Fatalf("goal = %+v %v %v, want provision", g, ok, err)
		}
		return r.NodeID, nc, g
	}
	status := func(nc *client.Client, id string, st api.Status) {
		t.Helper()
		if _, err := nc.Status(ctx, id, st); err != nil {
			t.Fatal(err)
		}
	}

	good, gc, g := node("52:54:00:aa:00:01")
	status(gc, good, api.Status{Phase: api.PhaseImaging, Provision: g.Provision, Progress: &api.Progress{Total: m.DataBytes}})
	target, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := target.Truncate(int64(len(img))); err != nil {
		t.Fatal(err)
	}
	w := &imaging.Writer{Manifest: *g.Image, Source: &imaging.HTTPSource{URL: gc.URL() + g.ImageURL, TLS: gc.TLS}, Target: target}
	if err := w.Write(ctx); err != nil {
		t.Fatalf("imaging from loomd: %v", err)
	}
	status(gc, good, api.Status{Phase: api.PhaseImaging, Provision: g.Provision, Progress: &api.Progress{Bytes: m.DataBytes, Total: m.DataBytes}})
	status(gc, good, api.Status{Phase: api.PhaseImaged, Provision: g.Provision})

	bad, bc, bg := node("52:54:00:aa:00:02")
	status(bc, bad, api.Status{Phase: api.PhaseImaging, Provision: bg.Provision})
	status(bc, bad, api.Status{Phase: api.PhaseFailed, Provision: bg.Provision, Reason: "sha256 mismatch", Cause: api.CauseVerify})

	// A long-poll open while the scrape runs.
	now, _, err := gc.Goal(ctx, good, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	polling := make(chan error, 1)
	go func() {
		_, _, err := gc.Goal(ctx, good, now.Incarnation, 3*time.Second)
		polling <- err
	}()
	if _, err := op.Node(ctx, "n-no-such-node"); err == nil {
		t.Fatal("a missing node was found")
	}

	// No token: nothing. A viewer's token: the exposition.
	if _, err := (&client.Client{BaseURL: op.BaseURL, TLS: op.TLS}).Metrics(ctx); !isStatus(err, 401) {
		t.Errorf("/metrics without a token: %v, want 401", err)
	}
	viewer, err := op.CreateToken(ctx, "grafana", api.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	vc := &client.Client{BaseURL: op.BaseURL, TLS: op.TLS, Token: viewer.Secret}
	var fam map[string]float64
	var body string
	for i := 0; ; i++ {
		if body, err = vc.Metrics(ctx); err != nil {
			t.Fatal(err)
		}
		fam = samples(t, body)
		if fam[`loom_api_requests_in_flight{route="GET /v1/nodes/{id}/goal"}`] == 1 || i > 50 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for k, want := range map[string]float64{
		`loom_imaging_bytes_total`:                                               float64(m.DataBytes),
		`loom_imaging_duration_seconds_count`:                                    1,
		`loom_imaging_failures_total{cause="verify"}`:                            1,
		`loom_imaging_failures_total{cause="transfer"}`:                          0,
		`loom_nodes{phase="Imaged"}`:                                             1,
		`loom_nodes{phase="Failed"}`:                                             1,
		`loom_nodes{phase="Registered"}`:                                         0,
		`loom_api_requests_in_flight{route="GET /v1/nodes/{id}/goal"}`:           1,
		`loom_api_requests_total{code="200",route="POST /v1/nodes/{id}/status"}`: 5,
		`loom_api_requests_total{code="200",route="POST /v1/nodes/register"}`:    2,
		`loom_api_requests_total{code="404",route="GET /v1/nodes/{id}"}`:         1,
		`loom_api_requests_total{code="401",route="GET /metrics"}`:               1,
		`loom_api_requests_total{code="206",route="GET /v1/images/{name}/blob"}`: fam[`loom_api_requests_total{code="206",route="GET /v1/images/{name}/blob"}`],
		`loom_leader`:               1,
		`loom_vms{state="Running"}`: 0,
	} {
		if got, ok := fam[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	for _, k := range []string{`loom_api_requests_total{code="206",route="GET /v1/images/{name}/blob"}`, `loom_store_request_duration_seconds_count{op="txn"}`,
		`loom_store_size_bytes`, `process_resident_memory_bytes`, `go_goroutines`} {
		if fam[k] <= 0 {
			t.Errorf("%s = %v, want > 0", k, fam[k])
		}
	}
	if err := <-polling; err != nil {
		t.Errorf("goal long-poll: %v", err)
	}
	vmtest.RequireTools(t, "make deps installs Debian's prometheus", "promtool")
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func isStatus(err error, code int) bool {
	var se *client.StatusError
	return errors.As(err, &se) && se.Code == code
}

func samples(t *testing.T, body string) map[string]float64 {
	t.Helper()
	m, err := metrics.Samples(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return m
}
