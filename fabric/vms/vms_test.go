package vms

import (
	"errors"
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

func host(id string, phase api.Phase, cpus int, memMiB uint64) api.Node {
	return api.Node{ID: id, Phase: phase, Inventory: &api.Inventory{CPU: api.CPU{Count: cpus}, Memory: memMiB << 20}}
}

func TestPlace(t *testing.T) {
	nodes := []api.Node{
		host("a", api.PhaseReady, 4, 4096),        // 3584 MiB after the host's reserve
		host("b", api.PhaseReady, 8, 16384),       // 15872
		host("c", api.PhaseRegistered, 64, 1<<20), // not a host yet
	}
	placed := []api.VM{
		{ID: "v1", Node: "b", VCPUs: 6, MemoryMB: 1024, Desired: api.VMRunning},
		{ID: "v2", Node: "b", VCPUs: 8, MemoryMB: 1024, Desired: api.VMDeleted}, // going: does not count
	}
	tests := []struct {
		name    string
		req     api.VMRequest
		want    string
		wantErr string
	}{
		{"most free memory that fits", api.VMRequest{VCPUs: 2, MemoryMB: 1024}, "b", ""},
		{"only a has the vCPUs", api.VMRequest{VCPUs: 3, MemoryMB: 1024}, "a", ""},
		{"named node", api.VMRequest{Node: "a", VCPUs: 1, MemoryMB: 256}, "a", ""},
		{"named node full", api.VMRequest{Node: "a", VCPUs: 1, MemoryMB: 4000}, "", "a has 4 vCPUs and 3584 MiB free"},
		{"named node not Ready", api.VMRequest{Node: "c", VCPUs: 1, MemoryMB: 256}, "", "c is Registered"},
		{"nobody has it", api.VMRequest{VCPUs: 5, MemoryMB: 16000}, "", "no Ready node has 5 vCPUs and 16000 MiB free (a has 4 vCPUs and 3584 MiB free; b has 2 vCPUs and 14848 MiB free; c is Registered)"},
		{"unknown node", api.VMRequest{Node: "zz", VCPUs: 1, MemoryMB: 256}, "", "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Place(tt.req, nodes, placed)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Place = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				if tt.name == "unknown node" && !errors.Is(err, store.ErrNotFound) || tt.name == "nobody has it" && !errors.Is(err, ErrNoCapacity) {
					t.Errorf("error %v has the wrong kind", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Place = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := Place(api.VMRequest{VCPUs: 1, MemoryMB: 64}, nil, nil); err == nil || !strings.Contains(err.Error(), "there are no nodes") {
		t.Errorf("Place with no nodes: %v", err)
	}
}

func TestVMRequestValidate(t *testing.T) {
	tests := []struct {
		req  api.VMRequest
		want []string // substrings of the error, one per bad field
	}{
		{api.VMRequest{Package: "web"}, nil}, // defaults: 1 vCPU, 256 MiB
		{api.VMRequest{VCPUs: -1, MemoryMB: 16, Package: ""}, []string{"vcpus: -1", "memoryMB: 16", "package: required"}},
		{api.VMRequest{Package: "web", Settings: map[string]string{"bad key": "x", "ok": strings.Repeat("v", 5000)}}, []string{`settings: key "bad key"`, "settings: ok: value longer"}},
	}
	for _, tt := range tests {
		tt.req.Default()
		err := tt.req.Validate()
		if len(tt.want) == 0 {
			if err != nil || tt.req.VCPUs != 1 || tt.req.MemoryMB != 256 {
				t.Errorf("Validate(%+v) = %v; want defaults applied and no error", tt.req, err)
			}
			continue
		}
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("Validate(%+v) = %v; want it to name %q", tt.req, err, w)
			}
		}
	}
}

func TestSameObserved(t *testing.T) {
	a := api.VMStatus{State: api.VMStateRunning, Interfaces: []string{"lo"}, Usage: &api.Usage{CPUSeconds: 1}}
	b := a
	b.Usage = &api.Usage{CPUSeconds: 2} // usage alone is no store write
	if !sameObserved(a, b) {
		t.Error("a usage change counted as an observed-state change")
	}
	b.Restarts = 1
	if sameObserved(a, b) {
		t.Error("a restart did not count as a change")
	}
}
