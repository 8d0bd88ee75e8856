package node

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/bmc"
	"github.com/loomfabric/loom/fabric/store"
)

// TestRackImport: a rack import on a real embedded etcd creates Enrolled
// nodes and updates known ones in one go; a bad line imports nothing; the
// imported nodes go Discovered → Registered with their labels, BMC and
// profile; a rack power-on boots the unimaged ones from the network.
func TestRackImport(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	var ops []string
	power := func(_ context.Context, tg bmc.Target, op bmc.Op) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		ops = append(ops, tg.Address+" "+string(op))
		if strings.Contains(tg.Address, "dead") {
			return "", errors.New("no route to host")
		}
		if op == bmc.OpOff {
			return "Off", nil
		}
		return "On", nil
	}
	r := New(Config{CA: testCA, Store: st, Now: func() time.Time { return now }, Power: power}, nil)
	st.PutCredential(ctx, api.Credential{Name: "r7", Username: "admin", Password: "pw"})
	st.PutProfile(ctx, api.Profile{Name: "host", Image: "host", Disk: "first:1GiB"})
	st.PutProfile(ctx, api.Profile{Name: "other", Image: "host", Disk: "first:1GiB"})

	known := "52:54:00:00:00:01"
	if err := r.Discovered(ctx, known); err != nil {
		t.Fatal(err)
	}
	b := func(addr string) *api.BMC {
		return &api.BMC{Protocol: api.BMCRedfish, Address: addr, Credential: "r7"}
	}
	entries := []api.RackEntry{
		{Line: 2, MAC: known, Rack: "r7", Slot: "u1", Profile: "host", BMC: b("http://bmc1")},
		{Line: 3, MAC: "52:54:00:00:00:02", Rack: "r7", Slot: "u2", Profile: "host", BMC: b("http://bmc2")},
		{Line: 4, MAC: "52:54:00:00:00:03", Rack: "r7", Slot: "u10", BMC: b("http://dead")},
		{Line: 5, MAC: "52:54:00:00:00:04", Rack: "r7", Slot: "u3"},
	}

	// Bad lines: nothing at all is written.
	bad := slices.Clone(entries)
	bad[1].BMC = &api.BMC{Protocol: api.BMCRedfish, Address: "http://bmc2", Credential: "nope"}
	bad[2].Profile = "missing"
	before, _ := r.List(ctx)
	_, err := r.Import(ctx, bad)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `line 3, field credential: "nope" does not exist`) || !strings.Contains(err.Error(), `line 4, field profile: "missing" does not exist`) {
		t.Fatalf("import with an unknown credential and profile: %v", err)
	}
	if after, _ := r.List(ctx); len(after) != len(before) || after[0].Rack != "" {
		t.Fatalf("a refused import changed the nodes: %+v", after)
	}

	res, err := r.Import(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Created) != 3 || len(res.Updated) != 1 {
		t.Fatalf("import = %+v, want 3 created and 1 updated", res)
	}
	// Importing the same file again changes nothing and creates nothing.
	if res2, err := r.Import(ctx, entries); err != nil || len(res2.Created) != 0 || len(res2.Updated) != 4 {
		t.Fatalf("import again = %+v, %v; want the same 4 updated", res2, err)
	}
	nodes, _ := r.List(ctx)
	if len(nodes) != 4 {
		t.Fatalf("%d nodes, want 4", len(nodes))
	}
	byMAC := map[string]api.Node{}
	for _, n := range nodes {
		byMAC[n.MAC] = n
	}
	if n := byMAC[known]; n.Phase != api.PhaseDiscovered || n.Rack != "r7" || n.Slot != "u1" || n.Profile != "host" || n.Provision != 1 || n.BMC == nil {
		t.Errorf("the known node after import: %+v", n)
	}
	if n := byMAC["52:54:00:00:00:02"]; n.Phase != api.PhaseEnrolled || n.Profile != "host" || n.Provision != 1 || n.BMC.Address != "http://bmc2" {
		t.Errorf("a new node after import: %+v", n)
	}

	// Conflicts with what the store holds.
	clash := []api.RackEntry{{Line: 2, MAC: "52:54:00:00:00:09", Rack: "r7", Slot: "u2"}}
	if _, err := r.Import(ctx, clash); err == nil || !strings.Contains(err.Error(), "line 2, field slot: rack r7 slot u2 is node") {
		t.Errorf("a slot taken by another node: %v", err)
	}
	switched := []api.RackEntry{{Line: 7, MAC: known, Rack: "r7", Slot: "u1", Profile: "other"}}
	if _, err := r.Import(ctx, switched); err == nil || !strings.Contains(err.Error(), "line 7, field profile: node") {
		t.Errorf("a provisioned node switched to another profile: %v", err)
	}

	// The enrolled server boots: DHCP, then its agent registers.
	mac2 := "52:54:00:00:00:02"
	if err := r.Discovered(ctx, mac2); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Get(ctx, byMAC[mac2].ID); n.Phase != api.PhaseDiscovered {
		t.Errorf("enrolled node seen in DHCP: %s, want Discovered", n.Phase)
	}
	n, _, err := r.Register(ctx, api.Registration{CSR: testCSR, MAC: mac2, Inventory: api.Inventory{NICs: []api.NIC{{MAC: mac2}}}})
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != byMAC[mac2].ID || n.Phase != api.PhaseRegistered || n.Rack != "r7" || n.Slot != "u2" || GoalFor(n) != api.ActionProvision {
		t.Errorf("registered enrolled node: %+v (goal %s), want the same node, Registered, in r7/u2, to be provisioned", n, GoalFor(n))
	}

	racks, err := r.Racks(ctx)
	if err != nil || len(racks) != 1 || racks[0].Nodes != 4 || racks[0].Phases[api.PhaseEnrolled] != 2 {
		t.Errorf("racks = %+v, %v", racks, err)
	}

	pw, err := r.PowerRack(ctx, "r7", bmc.OpOn)
	if err != nil {
		t.Fatal(err)
	}
	var slots []string
	for _, p := range pw.Nodes {
		slots = append(slots, p.Slot)
	}
	if strings.Join(slots, ",") != "u1,u2,u3,u10" {
		t.Errorf("rack power order %v, want by slot number", slots)
	}
	for _, p := range pw.Nodes {
		switch p.Slot {
		case "u1", "u2":
			if p.Error != "" || p.Power != "On" {
				t.Errorf("slot %s: %+v, want On", p.Slot, p)
			}
		case "u3":
			if p.Error != "no BMC" {
				t.Errorf("slot u3 without a BMC: %+v", p)
			}
		case "u10":
			if !strings.Contains(p.Error, "no route to host") {
				t.Errorf("slot u10 with a dead BMC: %+v", p)
			}
		}
	}
	slices.Sort(ops)
	want := []string{"http://bmc1 on", "http://bmc1 pxe-once", "http://bmc2 on", "http://bmc2 pxe-once", "http://dead pxe-once"}
	if !slices.Equal(ops, want) {
		t.Errorf("BMC operations %v, want %v", ops, want)
	}
	if _, err := r.PowerRack(ctx, "r8", bmc.OpOn); !store.IsNotFound(err) {
		t.Errorf("power on an unknown rack: %v, want not found", err)
	}
}
