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

// cloneService is cloneVM for a service.
func cloneService(s api.Service) api.Service {
	s.Roles = cloneRoles(s.Roles)
	if s.Walk != nil {
		w := *s.Walk
		w.From = cloneRoles(w.From)
		w.Order, w.Done, w.History = slices.Clone(w.Order), slices.Clone(w.Done), slices.Clone(w.History)
		s.Walk = &w
	}
	s.Endpoints = slices.Clone(s.Endpoints)
	return s
}

func cloneRoles(rs []api.ServiceRole) []api.ServiceRole {
	rs = slices.Clone(rs)
	for i := range rs {
		rs[i].Settings = maps.Clone(rs[i].Settings)
		rs[i].Health, rs[i].Endpoint = clonePtr(rs[i].Health), clonePtr(rs[i].Endpoint)
	}
	return rs
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}
