package node

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

func TestUnreachable(t *testing.T) {
	start := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	nodes := []api.Node{
		{ID: "fresh", Phase: api.PhaseRegistered},
		{ID: "silent", Phase: api.PhaseRegistered},
		{ID: "never-heard", Phase: api.PhaseRegistered},
		{ID: "discovered", Phase: api.PhaseDiscovered},
		{ID: "gone", Phase: api.PhaseUnreachable},
		{ID: "booting", Phase: api.PhaseBooting},
	}
	seen := map[string]time.Time{"fresh": start.Add(55 * time.Second), "silent": start.Add(10 * time.Second), "booting": start.Add(10 * time.Second)}
	for _, tc := range []struct {
		name string
		now  time.Time
		want []string
	}{
		{"within grace of start", start.Add(15 * time.Second), nil},
		{"silent ones past grace, booting within its boot grace", start.Add(60 * time.Second), []string{"silent", "never-heard"}},
		{"booting past its boot grace", start.Add(11 * time.Minute), []string{"fresh", "silent", "never-heard", "booting"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Unreachable(nodes, seen, start, tc.now, 20*time.Second, 10*time.Minute)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Unreachable (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIdentityUUID(t *testing.T) {
	for in, want := range map[string]string{
		"00000000-0000-0000-0000-000000000000": "",
		"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF": "",
		"":                                     "",
		"4CAE4D26-B1C8-4450-B8EF-3D290B8D4695": "4cae4d26-b1c8-4450-b8ef-3d290b8d4695",
	} {
		if got := identityUUID(in); got != want {
			t.Errorf("identityUUID(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLifecycle walks Discovered → Registered → Unreachable → Registered on
// a real embedded etcd with a fake clock.
func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	r := New(Config{CA: testCA, Store: st, HeartbeatInterval: time.Second, Grace: 4 * time.Second, Now: func() time.Time { return now }}, nil)
	phase := func(id string) api.Phase {
		n, err := r.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return n.Phase
	}

	mac := "52:54:00:00:00:01"
	for range 3 { // seen in DHCP three times: one node
		if err := r.Discovered(ctx, mac); err != nil {
			t.Fatal(err)
		}
	}
	nodes, _ := r.List(ctx)
	if len(nodes) != 1 || nodes[0].Phase != api.PhaseDiscovered {
		t.Fatalf("after DHCP: %+v, want one Discovered node", nodes)
	}
	n, cred, err := r.Register(ctx, api.Registration{CSR: testCSR, MAC: mac, Inventory: api.Inventory{NICs: []api.NIC{{MAC: mac}}}})
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != nodes[0].ID || n.Phase != api.PhaseRegistered {
		t.Fatalf("Register = %s %s, want %s Registered", n.ID, n.Phase, nodes[0].ID)
	}
	if err := r.Authenticate(ctx, n.ID, serialOf(t, cred)); err != nil {
		t.Fatalf("Authenticate with the new certificate: %v", err)
	}

	now = now.Add(3 * time.Second)
	r.sweep(ctx)
	if got := phase(n.ID); got != api.PhaseRegistered {
		t.Errorf("within grace: %s, want Registered", got)
	}
	now = now.Add(5 * time.Second)
	r.sweep(ctx)
	if got := phase(n.ID); got != api.PhaseUnreachable {
		t.Errorf("past grace: %s, want Unreachable", got)
	}
	if err := r.Report(ctx, n.ID, api.Status{}); err != nil {
		t.Fatal(err)
	}
	if got := phase(n.ID); got != api.PhaseRegistered {
		t.Errorf("after a heartbeat: %s, want Registered", got)
	}
}

// TestDiscoveredMany: a batch of MACs (one twice, one of an enrolled node)
// makes one Discovered node per new MAC, in one go, and moves the enrolled
// one to Discovered.
func TestDiscoveredMany(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	r := New(Config{CA: testCA, Store: st}, nil)
	if _, err := r.Import(ctx, []api.RackEntry{{Line: 2, MAC: "52:54:00:00:00:09", Rack: "r1"}}); err != nil {
		t.Fatal(err)
	}
	batch := []string{"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:01", "52:54:00:00:00:09", "52:54:00:00:00:03"}
	if err := r.DiscoveredMany(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := r.DiscoveredMany(ctx, batch); err != nil { // again: nothing new
		t.Fatal(err)
	}
	nodes, _ := r.List(ctx)
	if len(nodes) != 4 {
		t.Fatalf("%d nodes, want 4", len(nodes))
	}
	for _, n := range nodes {
		if n.Phase != api.PhaseDiscovered {
			t.Errorf("node %s (%s) is %s, want Discovered", n.ID, n.MAC, n.Phase)
		}
	}
}

// openStore opens a store on a real embedded etcd for one test.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
