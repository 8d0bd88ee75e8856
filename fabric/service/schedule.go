package service

import (
	"fmt"
	"slices"
	"strings"

	"github.com/loomfabric/loom/fabric/api"
)

// Placement is where the scheduler puts one new instance.
type Placement struct {
	// Node is "" when no Ready node has room: the instance is kept
	// Pending with Reason, and placed when room appears.
	Node         string
	UpdateDomain int
	Reason       string
}

// FaultDomain is the fault domain of a node: its rack, or, for a node in
// no rack, the node itself.
func FaultDomain(n api.Node) string {
	if n.Rack != "" {
		return "rack:" + n.Rack
	}
	return "node:" + n.ID
}

// Schedule places n new instances of role r of service svc. nodes are the
// fabric's nodes and vms every VM that exists (instances included). It is
// pure and deterministic:
//
//   - each instance gets the update domain with the fewest instances of
//     its role (the lowest number among equals), so a role's instances go
//     round-robin over the service's domains;
//   - it goes to a Ready node with room in the fault domain (rack) that
//     holds the fewest instances of its role, so no two share a rack while
//     another rack has room; among those, the node with the fewest
//     instances of the role, then the most free memory, then the lowest ID.
func Schedule(svc api.Service, r api.ServiceRole, n int, nodes []api.Node, vms []api.VM) []Placement {
	return newPlacer(nodes, vms).schedule(svc, r, n, instances(vms, svc.Name, r.Name), nil)
}

// placer is what scheduling needs of the fleet, built once for a whole
// plan: the nodes in ID order, their fault domains and the room each has
// left as the plan takes it. So that a placement need not look at every
// node, each fault domain keeps its Ready nodes in the order placement
// prefers among equals (most free memory, then lowest ID).
type placer struct {
	nodes []api.Node
	at    map[string]int // node ID → index
	dom   []int          // node index → fault domain number
	free  []api.Capacity
	// byDom[d]: domain d's Ready nodes, most free memory first (then
	// lowest index); slot[i]: node i's place there.
	byDom   [][]int
	slot    []int
	ordered bool // byDom is built
	// Scratch for one role at a time: its instances on each node and in
	// each fault domain (zero between calls).
	perNode, perDom []int
}

func newPlacer(nodes []api.Node, vms []api.VM) *placer {
	sorted := slices.SortedFunc(slices.Values(nodes), func(a, b api.Node) int { return strings.Compare(a.ID, b.ID) })
	p := &placer{nodes: sorted, at: make(map[string]int, len(sorted)), dom: make([]int, len(sorted)),
		free: make([]api.Capacity, len(sorted)), slot: make([]int, len(sorted)), perNode: make([]int, len(sorted))}
	doms := map[string]int{}
	for i, nd := range sorted {
		p.at[nd.ID] = i
		d, ok := doms[FaultDomain(nd)]
		if !ok {
			d = len(doms)
			doms[FaultDomain(nd)] = d
			p.byDom = append(p.byDom, nil)
		}
		p.dom[i] = d
		p.free[i] = api.Free(nd, nil)
	}
	p.perDom = make([]int, len(doms))
	for _, v := range vms {
		p.take(v, 1)
	}
	for i, nd := range sorted {
		if nd.Phase == api.PhaseReady {
			p.byDom[p.dom[i]] = append(p.byDom[p.dom[i]], i)
		}
	}
	for _, list := range p.byDom {
		slices.SortFunc(list, func(a, b int) int {
			if p.ahead(a, b) {
				return -1
			}
			return 1
		})
		for k, i := range list {
			p.slot[i] = k
		}
	}
	p.ordered = true
	return p
}

// ahead says whether node a comes before node b in their domain's list.
func (p *placer) ahead(a, b int) bool {
	if p.free[a].MemoryMB != p.free[b].MemoryMB {
		return p.free[a].MemoryMB > p.free[b].MemoryMB
	}
	return a < b
}

// use takes vcpus and memory of node i's room (negative: gives it back),
// keeping its domain's list in order.
func (p *placer) use(i, vcpus, memory int) {
	p.free[i].VCPUs -= vcpus
	p.free[i].MemoryMB -= memory
	if !p.ordered || p.nodes[i].Phase != api.PhaseReady {
		return // still counting the VMs that exist (newPlacer), or not a candidate
	}
	list := p.byDom[p.dom[i]]
	k := p.slot[i]
	for k > 0 && p.ahead(i, list[k-1]) {
		list[k] = list[k-1]
		p.slot[list[k]] = k
		k--
	}
	for k < len(list)-1 && p.ahead(list[k+1], i) {
		list[k] = list[k+1]
		p.slot[list[k]] = k
		k++
	}
	list[k], p.slot[i] = i, k
}

// take counts what v uses of its node (sign 1), or stops counting it
// (sign -1). A VM being deleted or not placed uses nothing.
func (p *placer) take(v api.VM, sign int) {
	if v.Desired == api.VMDeleted || v.Node == "" {
		return
	}
	if i, ok := p.at[v.Node]; ok {
		p.use(i, sign*v.VCPUs, sign*v.MemoryMB)
	}
}

// schedule places n new instances of role r, whose instances are mine,
// away from the nodes in avoid while any other has room. The room its
// placements take is given back at the end: the caller counts the VMs it
// makes of them (take).
func (p *placer) schedule(svc api.Service, r api.ServiceRole, n int, mine []api.VM, avoid map[string]bool) []Placement {
	var took []int
	defer func() {
		for _, i := range took {
			p.use(i, -r.VCPUs, -r.MemoryMB)
		}
	}()
	out := p.place(svc, r, n, mine, avoid, &took)
	if len(avoid) == 0 {
		return out
	}
	// What finds no room elsewhere goes anywhere, counting the rest.
	counted := slices.Clone(mine)
	for _, pl := range out {
		if pl.Node != "" {
			counted = append(counted, placed(svc, r, pl))
		}
	}
	for i, pl := range out {
		if pl.Node == "" {
			out[i] = p.place(svc, r, 1, counted, nil, &took)[0]
			counted = append(counted, placed(svc, r, out[i]))
		}
	}
	return out
}

// place is one scheduling round (see Schedule); took gets the index of
// each node given an instance.
func (p *placer) place(svc api.Service, r api.ServiceRole, n int, mine []api.VM, avoid map[string]bool, took *[]int) []Placement {
	perUD := make([]int, max(svc.UpdateDomains, 1))
	var touched []int
	defer func() {
		for _, i := range touched {
			p.perNode[i], p.perDom[p.dom[i]] = 0, 0
		}
	}()
	count := func(v api.VM) {
		if v.Desired == api.VMDeleted || v.Service != svc.Name || v.Role != r.Name {
			return
		}
		if v.UpdateDomain >= 0 && v.UpdateDomain < len(perUD) {
			perUD[v.UpdateDomain]++
		}
		if i, ok := p.at[v.Node]; ok && v.Node != "" {
			p.perNode[i]++
			p.perDom[p.dom[i]]++
			touched = append(touched, i)
		}
	}
	for _, v := range mine {
		count(v)
	}
	out := make([]Placement, 0, n)
	for range n {
		ud := 0
		for i, c := range perUD {
			if c < perUD[ud] {
				ud = i
			}
		}
		pl := Placement{UpdateDomain: ud}
		best := p.best(r, avoid)
		if best < 0 {
			pl.Reason = p.noRoom(r, avoid)
		} else {
			pl.Node = p.nodes[best].ID
			p.use(best, r.VCPUs, r.MemoryMB)
			*took = append(*took, best)
		}
		out = append(out, pl)
		count(placed(svc, r, pl))
	}
	return out
}

// best is the node the next instance of r goes to (-1: none has room):
// the fewest instances of the role in its fault domain, then on the node,
// then the most free memory, then the lowest ID (before), found a
// domain at a time: in a domain's list the first node
// with room and none of the role's instances beats every later one.
func (p *placer) best(r api.ServiceRole, avoid map[string]bool) int {
	best := -1
	for d, list := range p.byDom {
		if best >= 0 && p.perDom[d] > p.perDom[p.dom[best]] {
			continue // can't win: more of the role in this domain
		}
		for _, i := range list {
			f := p.free[i]
			if f.MemoryMB < r.MemoryMB {
				break // nor has any later node in the list
			}
			if f.VCPUs < r.VCPUs || avoid[p.nodes[i].ID] {
				continue
			}
			if best < 0 || p.before(i, best) {
				best = i
			}
			if p.perNode[i] == 0 {
				break
			}
		}
	}
	return best
}

// noRoom is a Pending instance's reason: what the Ready nodes (not in
// avoid) have free, the first few by name.
func (p *placer) noRoom(r api.ServiceRole, avoid map[string]bool) string {
	var notes []string
	ready := 0
	for i, nd := range p.nodes {
		if nd.Phase != api.PhaseReady || avoid[nd.ID] {
			continue
		}
		if ready++; len(notes) < maxNotes {
			f := p.free[i]
			notes = append(notes, fmt.Sprintf("%s has %d vCPUs and %d MiB free", nd.ID, max(f.VCPUs, 0), max(f.MemoryMB, 0)))
		}
	}
	if ready > maxNotes {
		notes = append(notes, fmt.Sprintf("and %d more Ready nodes", ready-maxNotes))
	}
	if len(notes) == 0 {
		notes = append(notes, "no node is Ready")
	}
	return fmt.Sprintf("no capacity: no Ready node has %d vCPUs and %d MiB free (%s)", r.VCPUs, r.MemoryMB, strings.Join(notes, "; "))
}

// maxNotes bounds the nodes a Pending instance's reason names.
const maxNotes = 5

// placed is what a placement adds to the VMs that later placements count.
func placed(svc api.Service, r api.ServiceRole, p Placement) api.VM {
	return api.VM{Service: svc.Name, Role: r.Name, Node: p.Node, UpdateDomain: p.UpdateDomain, VCPUs: r.VCPUs, MemoryMB: r.MemoryMB, Desired: api.VMRunning}
}

// before says whether node i comes before node j for the role being
// placed: fewer of its instances in the fault domain, then on the node,
// then ahead in the domain's order (more free memory, then lower ID).
func (p *placer) before(i, j int) bool {
	if di, dj := p.perDom[p.dom[i]], p.perDom[p.dom[j]]; di != dj {
		return di < dj
	}
	if p.perNode[i] != p.perNode[j] {
		return p.perNode[i] < p.perNode[j]
	}
	return p.ahead(i, j)
}
