package service

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// host is a Ready node with cpus and memMiB for guests (plus the host's
// reserve) in rack.
func host(id, rack string, cpus, memMiB int) api.Node {
	return api.Node{ID: id, Rack: rack, Phase: api.PhaseReady, Inventory: &api.Inventory{
		CPU: api.CPU{Count: cpus}, Memory: uint64(memMiB+api.HostReserveMB) << 20}}
}

// offering is n with its agent offering vcpus to guests.
func offering(n api.Node, vcpus int) api.Node { n.GuestVCPUs = vcpus; return n }

var svc = api.Service{Name: "gb", UpdateDomains: 3, Roles: []api.ServiceRole{
	{Name: "web", Kind: api.RoleWeb, Package: "p", Instances: 4, VCPUs: 1, MemoryMB: 256},
}}

func TestSchedule(t *testing.T) {
	web := svc.Roles[0]
	for _, tc := range []struct {
		name  string
		nodes []api.Node
		vms   []api.VM
		n     int
		want  string // node@ud per placement, "-" for none
	}{
		{"spread over racks first", []api.Node{host("a1", "a", 8, 4096), host("a2", "a", 8, 4096), host("b1", "b", 8, 4096)}, nil, 4,
			"a1@0 b1@1 a2@2 b1@0"},
		{"no rack: each node its own domain", []api.Node{host("n1", "", 8, 4096), host("n2", "", 8, 4096)}, nil, 3,
			"n1@0 n2@1 n1@2"},
		{"a full rack is passed over", []api.Node{host("a1", "a", 1, 4096), host("b1", "b", 8, 4096)}, nil, 3,
			"a1@0 b1@1 b1@2"},
		{"existing instances count", []api.Node{host("a1", "a", 8, 4096), host("b1", "b", 8, 4096)},
			[]api.VM{{ID: "x", Service: "gb", Role: "web", Node: "a1", UpdateDomain: 0, VCPUs: 1, MemoryMB: 256, Desired: api.VMRunning}}, 2,
			"b1@1 a1@2"},
		{"deleted instances do not", []api.Node{host("a1", "a", 8, 4096), host("b1", "b", 8, 4096)},
			[]api.VM{{ID: "x", Service: "gb", Role: "web", Node: "a1", VCPUs: 1, MemoryMB: 256, Desired: api.VMDeleted}}, 1,
			"a1@0"},
		{"other VMs take room", []api.Node{host("a1", "a", 2, 4096), host("b1", "b", 8, 4096)},
			[]api.VM{{ID: "y", Node: "a1", VCPUs: 2, MemoryMB: 256, Desired: api.VMRunning}}, 2,
			"b1@0 b1@1"},
		{"not Ready is passed over", []api.Node{{ID: "z", Phase: api.PhaseImaging}, host("b1", "b", 8, 4096)}, nil, 1, "b1@0"},
		{"no room: pending", []api.Node{host("a1", "a", 1, 300)}, nil, 2, "a1@0 -@1"},
		{"a host offering more vCPUs than it has", []api.Node{offering(host("a1", "a", 1, 4096), 3)}, nil, 4, "a1@0 a1@1 a1@2 -@0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := Schedule(svc, web, tc.n, tc.nodes, tc.vms)
			var got []string
			for _, p := range ps {
				n := p.Node
				if n == "" {
					n = "-"
					if !strings.HasPrefix(p.Reason, "no capacity: no Ready node has 1 vCPUs and 256 MiB free") {
						t.Errorf("reason %q", p.Reason)
					}
				}
				got = append(got, fmt.Sprintf("%s@%d", n, p.UpdateDomain))
			}
			if g := strings.Join(got, " "); g != tc.want {
				t.Fatalf("Schedule = %s, want %s", g, tc.want)
			}
			// Deterministic: the same input, the same answer.
			again := Schedule(svc, web, tc.n, tc.nodes, tc.vms)
			for i := range ps {
				if ps[i] != again[i] {
					t.Fatalf("second run differs at %d: %+v vs %+v", i, ps[i], again[i])
				}
			}
		})
	}
}

// apply writes a plan's change into vms, as the store would.
func apply(vms []api.VM, ch store.VMChange) []api.VM {
	byID := map[string]int{}
	for i, v := range vms {
		byID[v.ID] = i
	}
	for _, v := range ch.Put {
		if i, ok := byID[v.ID]; ok {
			vms[i] = v
		} else {
			byID[v.ID] = len(vms)
			vms = append(vms, v)
		}
	}
	out := vms[:0]
	for _, v := range vms {
		keep := true
		for _, id := range ch.Delete {
			keep = keep && v.ID != id
		}
		if keep {
			out = append(out, v)
		}
	}
	return out
}

func count(vms []api.VM, role string) (live, deleting, pending int) {
	for _, v := range vms {
		switch {
		case v.Role != role:
		case v.Desired == api.VMDeleted:
			deleting++
		case v.Node == "":
			pending++
		default:
			live++
		}
	}
	return
}

func TestPlanConverges(t *testing.T) {
	nodes := []api.Node{host("a1", "a", 4, 2048), host("a2", "a", 4, 2048), host("b1", "b", 4, 2048)}
	ids := 0
	newID := func() string { ids++; return fmt.Sprintf("vm-%04d", ids) }
	now := time.Unix(1e9, 0)
	var vms []api.VM
	step := func(s api.Service) {
		ch := Plan([]api.Service{s}, nodes, vms, nil, nil, now, newID)
		vms = apply(vms, ch)
		now = now.Add(time.Second)
		// A second pass over the result changes nothing: level-triggered
		// and settled.
		if again := Plan([]api.Service{s}, nodes, vms, nil, nil, now, newID); len(again.Put)+len(again.Delete) != 0 {
			t.Fatalf("not settled after one pass: %+v", again)
		}
	}
	s := svc
	s.Roles = []api.ServiceRole{svc.Roles[0]}
	s.Roles[0].Instances = 5
	step(s)
	if l, d, p := count(vms, "web"); l != 5 || d != 0 || p != 0 {
		t.Fatalf("5: live %d deleting %d pending %d", l, d, p)
	}
	racks := map[string]int{}
	for _, v := range vms {
		racks[v.Node[:1]]++
	}
	if racks["a"] != 3 || racks["b"] != 2 { // b has one node, a two: 3/2 is as even as room allows
		t.Fatalf("spread: %v", racks)
	}
	s.Roles[0].Instances = 8
	step(s)
	if l, _, _ := count(vms, "web"); l != 8 {
		t.Fatalf("8: live %d", l)
	}
	// 3 nodes × 4 vCPUs: at most 12 of 1 vCPU; 14 leaves 2 Pending.
	s.Roles[0].Instances = 14
	step(s)
	if l, _, p := count(vms, "web"); l != 12 || p != 2 {
		t.Fatalf("14: live %d pending %d", l, p)
	}
	s.Roles[0].Instances = 3
	step(s)
	if l, d, p := count(vms, "web"); l != 3 || d != 9 || p != 0 {
		t.Fatalf("3: live %d deleting %d pending %d (pending ones go first and are forgotten)", l, d, p)
	}
	// The hosts remove the deleted ones (the VM manager forgets them).
	vms = slices.DeleteFunc(vms, func(v api.VM) bool { return v.Desired == api.VMDeleted })
	uds := map[int]int{}
	for _, v := range vms {
		uds[v.UpdateDomain]++
	}
	if len(uds) != 3 {
		t.Fatalf("the 3 left should be in 3 update domains: %v", uds)
	}
	racks = map[string]int{}
	for _, v := range vms {
		racks[v.Node[:1]]++
	}
	if racks["a"] == 0 || racks["b"] == 0 {
		t.Fatalf("the 3 left should be in both racks: %v", racks)
	}
	// The service goes: every instance with it.
	ch := Plan(nil, nodes, vms, nil, nil, now, newID)
	vms = apply(vms, ch)
	if l, d, _ := count(vms, "web"); l != 0 || d != 3 {
		t.Fatalf("service deleted: live %d deleting %d", l, d)
	}
	// VMs made by hand are never touched.
	hand := []api.VM{{ID: "vm-hand", Node: "a1", VCPUs: 1, MemoryMB: 256, Desired: api.VMRunning}}
	if ch := Plan(nil, nodes, hand, nil, nil, now, newID); len(ch.Put)+len(ch.Delete) != 0 {
		t.Fatalf("touched a VM without a service: %+v", ch)
	}
}

func TestPlanPlacesPendingWhenRoomAppears(t *testing.T) {
	s := svc
	s.Roles = []api.ServiceRole{svc.Roles[0]}
	s.Roles[0].Instances = 2
	nodes := []api.Node{host("a1", "a", 1, 2048)}
	n := 0
	newID := func() string { n++; return fmt.Sprint("vm-", n) }
	vms := apply(nil, (Plan([]api.Service{s}, nodes, nil, nil, nil, time.Time{}, newID)))
	if l, _, p := count(vms, "web"); l != 1 || p != 1 {
		t.Fatalf("live %d pending %d", l, p)
	}
	nodes = append(nodes, host("b1", "b", 1, 2048))
	ch := Plan([]api.Service{s}, nodes, vms, nil, nil, time.Time{}, newID)
	if len(ch.Put) != 1 || ch.Put[0].Node != "b1" || ch.Put[0].Reason != "" || n != 2 {
		t.Fatalf("the pending instance should go to b1, no new one made: %+v (ids made %d)", ch, n)
	}
}

func TestLostHostsReplacedWithinTheCap(t *testing.T) {
	now := time.Unix(2e9, 0)
	p := Policy{LostAfter: time.Minute, MaxLost: 0.34}
	s := svc
	s.Roles = []api.ServiceRole{svc.Roles[0]}
	s.Roles[0].Instances = 4
	nodes := []api.Node{host("a1", "a", 4, 2048), host("b1", "b", 4, 2048), host("c1", "c", 4, 2048), host("d1", "d", 4, 2048)}
	n := 0
	newID := func() string { n++; return fmt.Sprint("vm-", n) }
	vms := apply(nil, Plan([]api.Service{s}, nodes, nil, nil, nil, now, newID))
	for i := range vms {
		vms[i].State = api.VMStateRunning
	}
	unreachable := func(ids ...string) []api.Node {
		out := slices.Clone(nodes)
		for i := range out {
			if slices.Contains(ids, out[i].ID) {
				out[i].Phase, out[i].PhaseChanged = api.PhaseUnreachable, now.Add(-90*time.Second)
			}
		}
		return out
	}
	// Not yet past LostAfter: nothing moves.
	short := slices.Clone(nodes)
	short[0].Phase, short[0].PhaseChanged = api.PhaseUnreachable, now.Add(-30*time.Second)
	if lost, held := LostNodes(short, now, p); len(lost) != 0 || held {
		t.Fatalf("lost %v held %v before LostAfter", lost, held)
	}
	// One of four hosts lost: its instance is replaced elsewhere.
	ns := unreachable("a1")
	lost, held := LostNodes(ns, now, p)
	if !lost["a1"] || held {
		t.Fatalf("lost %v held %v", lost, held)
	}
	after := apply(slices.Clone(vms), Plan([]api.Service{s}, ns, vms, lost, nil, now, newID))
	live := 0
	for _, v := range after {
		switch {
		case v.Node == "a1" && (v.Desired != api.VMDeleted || !strings.Contains(v.Reason, "is lost")):
			t.Fatalf("the lost host's instance: %+v", v)
		case v.Desired != api.VMDeleted:
			live++
		}
	}
	if live != 4 {
		t.Fatalf("%d live instances after a host loss, want 4 (replaced)", live)
	}
	// Two of four at once (a split?): over the cap, nothing is evicted.
	ns = unreachable("a1", "b1")
	lost, held = LostNodes(ns, now, p)
	if len(lost) != 0 || !held {
		t.Fatalf("half the hosts lost: lost %v held %v, want none and held", lost, held)
	}
	if ch := Plan([]api.Service{s}, ns, vms, lost, nil, now, newID); len(ch.Put)+len(ch.Delete) != 0 {
		t.Fatalf("evicted past the cap: %+v", ch)
	}
}

func TestCrashingInstanceReplacedElsewhere(t *testing.T) {
	now := time.Unix(2e9, 0)
	s := svc
	s.Roles = []api.ServiceRole{svc.Roles[0]}
	s.Roles[0].Instances = 2
	nodes := []api.Node{host("a1", "a", 4, 2048), host("b1", "b", 4, 2048), host("c1", "c", 4, 2048)}
	n := 0
	newID := func() string { n++; return fmt.Sprint("vm-", n) }
	vms := apply(nil, Plan([]api.Service{s}, nodes, nil, nil, nil, now, newID))
	for i := range vms {
		vms[i].State = api.VMStateRunning
	}
	// Crashing, but not yet often enough: left to its host.
	vms[0].State, vms[0].Restarts, vms[0].Reason = api.VMStateCrashed, 4, "QEMU exited; restarting"
	if sick := Sick(vms, 5); len(sick) != 0 {
		t.Fatalf("sick after 4 crashes: %v", sick)
	}
	vms[0].Restarts = 5
	sick := Sick(vms, 5)
	if !sick[vms[0].ID] || len(sick) != 1 {
		t.Fatalf("sick %v, want %s", sick, vms[0].ID)
	}
	bad := vms[0].Node
	after := apply(slices.Clone(vms), Plan([]api.Service{s}, nodes, vms, nil, sick, now, newID))
	var placed []string
	for _, v := range after {
		switch {
		case v.ID == vms[0].ID:
			if v.Desired != api.VMDeleted || !strings.Contains(v.Reason, "crashed 5 times on "+bad) {
				t.Errorf("the crashing instance: %s %q", v.Desired, v.Reason)
			}
		case v.Desired != api.VMDeleted:
			placed = append(placed, v.Node)
		}
	}
	if len(placed) != 2 || slices.Contains(placed, bad) {
		t.Errorf("instances on %v after the replacement, want 2 and none on %s", placed, bad)
	}
	// With no other room, the replacement goes back to the same host
	// rather than stay Pending.
	one := []api.Node{host("a1", "a", 4, 2048)}
	vs := apply(nil, Plan([]api.Service{s}, one, nil, nil, nil, now, newID))
	vs[0].State, vs[0].Restarts = api.VMStateCrashed, 9
	after = apply(slices.Clone(vs), Plan([]api.Service{s}, one, vs, nil, Sick(vs, 5), now, newID))
	for _, v := range after {
		if v.Desired != api.VMDeleted && v.Node != "a1" {
			t.Errorf("with one host: %s on %q (%s)", v.ID, v.Node, v.Reason)
		}
	}
}

// TestReplacementsNeverOvercommit: replacements that find no room away
// from a crashing instance's host fall back to every host, counting the
// ones just placed elsewhere.
func TestReplacementsNeverOvercommit(t *testing.T) {
	now := time.Unix(2e9, 0)
	s := svc
	s.Roles = []api.ServiceRole{svc.Roles[0]}
	s.Roles[0].Instances = 3
	nodes := []api.Node{host("a1", "a", 4, 2048), host("b1", "b", 1, 2048)}
	vms := []api.VM{
		{ID: "ok", Service: "gb", Role: "web", Node: "a1", VCPUs: 1, MemoryMB: 256, Desired: api.VMRunning, VMStatus: api.VMStatus{State: api.VMStateRunning}},
		{ID: "sick", Service: "gb", Role: "web", Node: "a1", UpdateDomain: 1, VCPUs: 1, MemoryMB: 256, Desired: api.VMRunning,
			VMStatus: api.VMStatus{State: api.VMStateCrashed, Restarts: 5}},
	}
	n := 0
	newID := func() string { n++; return fmt.Sprint("vm-", n) }
	after := apply(slices.Clone(vms), Plan([]api.Service{s}, nodes, vms, nil, Sick(vms, 5), now, newID))
	for _, nd := range nodes {
		if f := api.Free(nd, after); f.VCPUs < 0 || f.MemoryMB < 0 {
			t.Errorf("%s overcommitted: %+v free", nd.ID, f)
		}
	}
	live := 0
	for _, v := range after {
		if v.Desired != api.VMDeleted && v.Node != "" {
			live++
		}
	}
	if live != 3 {
		t.Errorf("%d placed instances, want 3", live)
	}
}

// TestPendingReasonIsBounded: with no room on a big fleet the reason names
// a few nodes and counts the rest.
func TestPendingReasonIsBounded(t *testing.T) {
	var nodes []api.Node
	for i := range 8 {
		nodes = append(nodes, host(fmt.Sprintf("n%d", i), "", 1, 100))
	}
	p := Schedule(svc, svc.Roles[0], 1, nodes, nil)[0]
	if p.Node != "" || strings.Count(p.Reason, "MiB free") != 6 || !strings.Contains(p.Reason, "n4 has 1 vCPUs and 100 MiB free; and 3 more Ready nodes") {
		t.Errorf("reason %q: want 5 nodes named and 3 more counted", p.Reason)
	}
}

// TestLimit: a plan bigger than one transaction is cut, keeping every
// upgrade step and Plan's order, and says more is to come.
func TestLimit(t *testing.T) {
	var ch store.VMChange
	for i := range 6 {
		ch.Put = append(ch.Put, api.VM{ID: fmt.Sprintf("p%d", i)})
	}
	ch.Delete = []string{"d0", "d1"}
	if got, more := limit(ch, nil, 8); more || len(got.Put) != 6 || len(got.Delete) != 2 {
		t.Errorf("a plan that fits: %+v more=%v", got, more)
	}
	got, more := limit(ch, []api.VM{{ID: "p5"}}, 3)
	var ids []string
	for _, v := range got.Put {
		ids = append(ids, v.ID)
	}
	if !more || strings.Join(ids, ",") != "p5,p0,p1" || len(got.Delete) != 0 {
		t.Errorf("cut to 3: puts %v deletes %v more=%v; want the step p5, then p0, p1", ids, got.Delete, more)
	}
}

// A plan on a budget places that many a pass and says there is more; the
// passes end where one unbounded plan does.
func TestPlanBudget(t *testing.T) {
	nodes := []api.Node{host("a1", "a", 4, 2048), host("a2", "a", 4, 2048), host("b1", "b", 4, 2048)}
	ids := 0
	newID := func() string { ids++; return fmt.Sprintf("vm-%04d", ids) }
	s := svc
	s.Roles = []api.ServiceRole{svc.Roles[0]}
	s.Roles[0].Instances = 5
	now := time.Unix(1e9, 0)
	var vms []api.VM
	var passes []int
	for range 10 {
		ch, more := plan([]api.Service{s}, nodes, vms, nil, nil, now, newID, 2)
		vms = apply(vms, ch)
		passes = append(passes, len(ch.Put))
		if !more {
			break
		}
	}
	if fmt.Sprint(passes) != "[2 2 1]" {
		t.Fatalf("puts per pass %v, want [2 2 1]", passes)
	}
	racks := map[string]int{}
	for _, v := range vms {
		racks[v.Node[:1]]++
	}
	if l, _, p := count(vms, "web"); l != 5 || p != 0 || racks["a"] != 3 || racks["b"] != 2 {
		t.Fatalf("after the passes: live %d pending %d racks %v; want 5 placed, 3 in a and 2 in b", l, p, racks)
	}
}

// The placer finds its node a fault domain at a time; this is the plain
// definition it must agree with: every Ready node with room in ID order,
// the one with the fewest of the role in its domain, then on it, then the
// most free memory; ties to the lowest ID (the first seen).
func bestByScan(p *placer, r api.ServiceRole, avoid map[string]bool) int {
	better := func(i, j int) bool {
		if p.perDom[p.dom[i]] != p.perDom[p.dom[j]] {
			return p.perDom[p.dom[i]] < p.perDom[p.dom[j]]
		}
		if p.perNode[i] != p.perNode[j] {
			return p.perNode[i] < p.perNode[j]
		}
		return p.free[i].MemoryMB > p.free[j].MemoryMB
	}
	best := -1
	for i := range p.nodes {
		f := p.free[i]
		if p.nodes[i].Phase != api.PhaseReady || f.VCPUs < r.VCPUs || f.MemoryMB < r.MemoryMB || avoid[p.nodes[i].ID] {
			continue
		}
		if best < 0 || better(i, best) {
			best = i
		}
	}
	return best
}

func TestPlacerAgreesWithScan(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var nodes []api.Node
		for i := range 1 + rnd.IntN(60) {
			rack := ""
			if rnd.IntN(4) > 0 {
				rack = fmt.Sprint("r", rnd.IntN(6))
			}
			n := host(fmt.Sprintf("n%02d", i), rack, 1+rnd.IntN(8), 256*(1+rnd.IntN(16)))
			if rnd.IntN(8) == 0 {
				n.Phase = api.PhaseUnreachable
			}
			nodes = append(nodes, n)
		}
		var vms []api.VM
		for i := range rnd.IntN(40) {
			vms = append(vms, api.VM{ID: fmt.Sprint("v", i), Node: nodes[rnd.IntN(len(nodes))].ID, Service: "s", Role: fmt.Sprint("r", rnd.IntN(2)),
				VCPUs: 1, MemoryMB: 256 * (1 + rnd.IntN(2)), Desired: api.VMRunning})
		}
		p := newPlacer(nodes, vms)
		r := api.ServiceRole{Name: "r0", VCPUs: 1 + rnd.IntN(2), MemoryMB: 256 * (1 + rnd.IntN(3))}
		avoid := map[string]bool{}
		if rnd.IntN(3) == 0 {
			avoid[nodes[rnd.IntN(len(nodes))].ID] = true
		}
		mine := instances(vms, "s", "r0")
		var took []int
		// Count the role as place does, then place one at a time,
		// comparing each choice with the scan's.
		for _, v := range mine {
			if i, ok := p.at[v.Node]; ok {
				p.perNode[i]++
				p.perDom[p.dom[i]]++
			}
		}
		for k := range 30 {
			got, want := p.best(r, avoid), bestByScan(p, r, avoid)
			if got != want {
				t.Fatalf("round %d, placement %d: placer chose %d, the scan %d", round, k, got, want)
			}
			if got < 0 {
				break
			}
			p.use(got, r.VCPUs, r.MemoryMB)
			p.perNode[got]++
			p.perDom[p.dom[got]]++
			took = append(took, got)
		}
		// Giving the room back leaves every domain's list in order.
		for _, i := range took {
			p.use(i, -r.VCPUs, -r.MemoryMB)
		}
		for d, list := range p.byDom {
			for k := 1; k < len(list); k++ {
				if !p.ahead(list[k-1], list[k]) {
					t.Fatalf("round %d: domain %d out of order at %d", round, d, k)
				}
			}
			for k, i := range list {
				if p.slot[i] != k {
					t.Fatalf("round %d: node %d in slot %d, recorded %d", round, i, k, p.slot[i])
				}
			}
		}
	}
}
