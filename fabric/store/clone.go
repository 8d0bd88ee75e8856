package store

import (
	"maps"
	"slices"

	"github.com/loomfabric/loom/fabric/api"
)

// cloneVM copies a VM sharing no map, slice or pointer with it, so a
// reader may change what the store's copy hands out (TestHandClones
// fails if a field is added without its line here).
func cloneVM(v api.VM) api.VM {
	v.Settings = maps.Clone(v.Settings)
	v.Health = clonePtr(v.Health)
	v.Interfaces = slices.Clone(v.Interfaces)
	v.Usage = clonePtr(v.Usage)
	return v
}

// cloneNode is cloneVM for the node.
func cloneNode(n api.Node) api.Node {
	if n.Inventory != nil {
		inv := *n.Inventory
		inv.NICs, inv.Disks = slices.Clone(inv.NICs), slices.Clone(inv.Disks)
		n.Inventory = &inv
	}
	n.Accel, n.BMC, n.Progress = clonePtr(n.Accel), clonePtr(n.BMC), clonePtr(n.Progress)
	n.History = slices.Clone(n.History)
	return n
}

// cloneManifest is cloneVM for an image's manifest.
func cloneManifest(m api.Manifest) api.Manifest {
	m.Ranges = slices.Clone(m.Ranges)
	return m
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}
