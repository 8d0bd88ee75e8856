package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/bmc"
	"github.com/loomfabric/loom/fabric/rack"
	"github.com/loomfabric/loom/fabric/store"
)

// Racks, on top of the phases in node.go:
//
//	(rack import of an unknown MAC) → Enrolled
//	Enrolled  --its MAC seen in DHCP-->       Discovered
//	Enrolled  --its maintenance agent registers--> Registered
//
// An imported node carries its rack, slot, BMC and profile from the first
// packet on; with a profile it is imaged as soon as it registers.

// Import enrolls a rack's servers: unknown MACs become Enrolled nodes, known
// ones get the entries' rack, slot, BMC and profile. Every entry is checked
// against the store first (credentials and profiles exist, slots free, no
// provisioned node switched to another profile); any problem fails the
// whole import with ErrInvalid, naming the lines, and nothing is written.
// The writes are one transaction.
func (r *Registry) Import(ctx context.Context, entries []api.RackEntry) (api.RackImport, error) {
	rs := r.cfg.Store
	r.regMu.Lock() // no registration or discovery claims a MAC meanwhile
	defer r.regMu.Unlock()
	for attempt := 0; ; attempt++ {
		writes, res, err := r.planImport(ctx, rs, entries)
		if err != nil {
			return api.RackImport{}, err
		}
		err = r.cfg.Store.WriteNodes(ctx, writes)
		if errors.Is(err, store.ErrExists) && attempt < 5 {
			continue // a heartbeat moved a node: plan again
		}
		if err != nil {
			return api.RackImport{}, err
		}
		// MACs are not marked known: their first DHCP packet is to move
		// Enrolled nodes to Discovered.
		r.log.Info("rack imported", "created", len(res.Created), "updated", len(res.Updated))
		return res, nil
	}
}

func (r *Registry) planImport(ctx context.Context, rs Store, entries []api.RackEntry) ([]store.NodeWrite, api.RackImport, error) {
	nodes, err := r.cfg.Store.Nodes(ctx)
	if err != nil {
		return nil, api.RackImport{}, err
	}
	slotOf := map[string]string{} // rack/slot → node id holding it
	for _, n := range nodes {
		if n.Rack != "" && n.Slot != "" {
			slotOf[n.Rack+"/"+n.Slot] = n.ID
		}
	}
	type problem struct {
		line int
		msg  string
	}
	var problems []problem
	bad := func(e api.RackEntry, field, format string, args ...any) {
		problems = append(problems, problem{e.Line, fmt.Sprintf("line %d, field %s: %s", e.Line, field, fmt.Sprintf(format, args...))})
	}
	checked := map[string]error{} // "credential/NAME", "profile/NAME" → lookup result
	exists := func(kind, name string, get func() error) error {
		k := kind + "/" + name
		if err, ok := checked[k]; ok {
			return err
		}
		checked[k] = get()
		return checked[k]
	}
	now := r.cfg.Now()
	var writes []store.NodeWrite
	var res api.RackImport
	inFile := map[string]bool{} // node ids the file names
	type planned struct {
		e  api.RackEntry
		id string
	}
	var plan []planned
	for _, e := range entries {
		if e.BMC != nil {
			if err := e.BMC.Validate(); err != nil {
				bad(e, "bmc", "%v", err)
			}
			err := exists("credential", e.BMC.Credential, func() error {
				_, err := rs.BMCCredential(ctx, e.BMC.Credential)
				return err
			})
			switch {
			case store.IsNotFound(err):
				bad(e, "credential", "%q does not exist (loom credential set %s --username U --password-file F)", e.BMC.Credential, e.BMC.Credential)
			case err != nil:
				return nil, res, err
			}
		}
		if e.Profile != "" {
			err := exists("profile", e.Profile, func() error { _, err := rs.Profile(ctx, e.Profile); return err })
			switch {
			case store.IsNotFound(err):
				bad(e, "profile", "%q does not exist (loom profile set ...)", e.Profile)
			case err != nil:
				return nil, res, err
			}
		}
		id, err := r.cfg.Store.NodeIDByMAC(ctx, e.MAC)
		switch {
		case store.IsNotFound(err):
			id = ""
		case err != nil:
			return nil, res, err
		default:
			inFile[id] = true
		}
		plan = append(plan, planned{e, id})
	}
	for _, p := range plan {
		e := p.e
		if e.Slot != "" {
			if holder := slotOf[e.Rack+"/"+e.Slot]; holder != "" && holder != p.id && !inFile[holder] {
				bad(e, "slot", "rack %s slot %s is node %s's already", e.Rack, e.Slot, holder)
			}
		}
		if p.id == "" {
			n := api.Node{ID: newID(), MAC: e.MAC, Created: now, Rack: e.Rack, Slot: e.Slot, BMC: e.BMC}
			n.SetPhase(api.PhaseEnrolled, now, "rack import")
			if e.Profile != "" {
				n.Profile, n.Provision = e.Profile, 1
			}
			writes = append(writes, store.NodeWrite{Node: n, MACs: []string{e.MAC}})
			res.Created = append(res.Created, n.ID)
			continue
		}
		n, rev, err := rs.NodeRev(ctx, p.id)
		if err != nil {
			return nil, res, err
		}
		if e.Profile != "" && n.Provision > 0 && n.Profile != e.Profile {
			bad(e, "profile", "node %s is provisioned with %q already; loom node provision %s %s reimages it", n.ID, n.Profile, n.ID, e.Profile)
		}
		n.Rack, n.Slot = e.Rack, e.Slot
		if e.BMC != nil {
			if n.BMC != nil && n.BMC.Address == e.BMC.Address {
				e.BMC.Power, e.BMC.PowerChecked, e.BMC.LastAction = n.BMC.Power, n.BMC.PowerChecked, n.BMC.LastAction
			}
			n.BMC = e.BMC
		}
		if e.Profile != "" && n.Provision == 0 {
			n.Profile, n.Provision = e.Profile, 1
		}
		writes = append(writes, store.NodeWrite{Node: n, Rev: rev})
		res.Updated = append(res.Updated, n.ID)
	}
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].line < problems[j].line })
		msgs := make(rack.Errors, len(problems))
		for i, p := range problems {
			msgs[i] = p.msg
		}
		return nil, res, fmt.Errorf("%w: nothing imported: %v", ErrInvalid, msgs)
	}
	return writes, res, nil
}

// Racks summarises the racks: how many nodes each has in each phase.
func (r *Registry) Racks(ctx context.Context) ([]api.RackSummary, error) {
	nodes, err := r.cfg.Store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	by := map[string]*api.RackSummary{}
	var out []api.RackSummary
	for _, n := range nodes {
		if n.Rack == "" {
			continue
		}
		s := by[n.Rack]
		if s == nil {
			s = &api.RackSummary{Rack: n.Rack, Phases: map[api.Phase]int{}}
			by[n.Rack] = s
		}
		s.Nodes++
		s.Phases[n.Phase]++
	}
	for _, s := range by {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rack < out[j].Rack })
	return out, nil
}

// RackPowerParallel bounds how many BMCs a rack operation talks to at once.
const RackPowerParallel = 16

// PowerRack performs op on every node of a rack through its BMC. "on"
// boots a node that is still to be imaged from the network (PXE once,
// then on); a node already imaged powers on to its disk. Nodes without a
// BMC, and BMCs that fail, are reported in their entry; the others go on.
func (r *Registry) PowerRack(ctx context.Context, rack string, op bmc.Op) (api.RackPower, error) {
	nodes, err := r.List(ctx)
	if err != nil {
		return api.RackPower{}, err
	}
	var members []api.Node
	for _, n := range nodes {
		if n.Rack == rack {
			members = append(members, n)
		}
	}
	if len(members) == 0 {
		return api.RackPower{}, fmt.Errorf("rack %s: %w (no node has it; loom rack import FILE)", rack, store.ErrNotFound)
	}
	sort.Slice(members, func(i, j int) bool { return api.SlotLess(members[i], members[j]) })
	out := api.RackPower{Nodes: make([]api.RackPowerNode, len(members))}
	sem := make(chan struct{}, RackPowerParallel)
	var wg sync.WaitGroup
	why := fmt.Sprintf("rack %s power %s", rack, op)
	for i, n := range members {
		out.Nodes[i] = api.RackPowerNode{Node: n.ID, Slot: n.Slot}
		if n.BMC == nil {
			out.Nodes[i].Error = "no BMC"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var state string
			var err error
			if op == bmc.OpOn && GoalFor(n) != api.ActionBootHost && n.Phase != api.PhaseReady {
				_, err = r.Power(ctx, n.ID, bmc.OpPXEOnce, why)
			}
			if err == nil {
				state, err = r.Power(ctx, n.ID, op, why)
			}
			out.Nodes[i].Power = state
			if err != nil {
				out.Nodes[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	return out, nil
}
