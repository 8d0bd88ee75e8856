package service

import (
	"fmt"
	"sort"
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
	sorted := append([]api.Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	domainOf := make(map[string]string, len(sorted))
	for _, nd := range sorted {
		domainOf[nd.ID] = FaultDomain(nd)
	}
	// One pass over the VMs (not one per node and placement: a fleet has
	// 10,000s of nodes and 100,000s of VMs): what each node has given
	// away, and where the role's instances are. Placements below add to
	// both as they are made.
	used := map[string]api.Capacity{}
	perNode, perDomain, perUD := map[string]int{}, map[string]int{}, make([]int, max(svc.UpdateDomains, 1))
	count := func(v api.VM) {
		if v.Desired == api.VMDeleted {
			return
		}
		if v.Node != "" {
			u := used[v.Node]
			u.VCPUs += v.VCPUs
			u.MemoryMB += v.MemoryMB
			used[v.Node] = u
		}
		if v.Service != svc.Name || v.Role != r.Name {
			return
		}
		if v.UpdateDomain >= 0 && v.UpdateDomain < len(perUD) {
			perUD[v.UpdateDomain]++
		}
		if v.Node != "" {
			perNode[v.Node]++
			perDomain[domainOf[v.Node]]++
		}
	}
	for _, v := range vms {
		count(v)
	}
	free := func(nd api.Node) api.Capacity {
		f, u := api.Free(nd, nil), used[nd.ID]
		return api.Capacity{VCPUs: f.VCPUs - u.VCPUs, MemoryMB: f.MemoryMB - u.MemoryMB}
	}
	out := make([]Placement, 0, n)
	for range n {
		ud := 0
		for i, c := range perUD {
			if c < perUD[ud] {
				ud = i
			}
		}
		p := Placement{UpdateDomain: ud}
		var best *api.Node
		var bestFree api.Capacity
		for i := range sorted {
			nd := &sorted[i]
			if nd.Phase != api.PhaseReady {
				continue
			}
			f := free(*nd)
			if f.VCPUs < r.VCPUs || f.MemoryMB < r.MemoryMB {
				continue
			}
			if best == nil || better(perDomain[domainOf[nd.ID]], perNode[nd.ID], f.MemoryMB, perDomain[domainOf[best.ID]], perNode[best.ID], bestFree.MemoryMB) {
				best, bestFree = nd, f
			}
		}
		if best == nil {
			var notes []string
			ready := 0
			for _, nd := range sorted {
				if nd.Phase != api.PhaseReady {
					continue
				}
				if ready++; len(notes) < maxNotes {
					f := free(nd)
					notes = append(notes, fmt.Sprintf("%s has %d vCPUs and %d MiB free", nd.ID, max(f.VCPUs, 0), max(f.MemoryMB, 0)))
				}
			}
			if ready > maxNotes {
				notes = append(notes, fmt.Sprintf("and %d more Ready nodes", ready-maxNotes))
			}
			if len(notes) == 0 {
				notes = append(notes, "no node is Ready")
			}
			p.Reason = fmt.Sprintf("no capacity: no Ready node has %d vCPUs and %d MiB free (%s)", r.VCPUs, r.MemoryMB, strings.Join(notes, "; "))
		} else {
			p.Node = best.ID
		}
		out = append(out, p)
		count(placed(svc, r, p))
	}
	return out
}

// maxNotes bounds the nodes a Pending instance's reason names.
const maxNotes = 5

// placed is what a placement adds to the VMs that later placements count.
func placed(svc api.Service, r api.ServiceRole, p Placement) api.VM {
	return api.VM{Service: svc.Name, Role: r.Name, Node: p.Node, UpdateDomain: p.UpdateDomain, VCPUs: r.VCPUs, MemoryMB: r.MemoryMB, Desired: api.VMRunning}
}

// better reports whether a candidate (instances of the role in its fault
// domain, on the node, free memory) beats the best so far; nodes come in
// ID order, so an equal candidate loses.
func better(dom, node, free, bestDom, bestNode, bestFree int) bool {
	if dom != bestDom {
		return dom < bestDom
	}
	if node != bestNode {
		return node < bestNode
	}
	return free > bestFree
}
