package store

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
)

// Many placements racing for one host's room against a real etcd: the
// transaction lets exactly as many in as fit, and every change moves the
// node's VMGen (its goal incarnation).
func TestChangeVMsNeverOvercommits(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	n := api.Node{ID: "h", Phase: api.PhaseReady, Inventory: &api.Inventory{CPU: api.CPU{Count: 4}}}
	if err := s.CreateNode(ctx, n, nil, ""); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.ChangeVMs(ctx, func(nodes []api.Node, vms []api.VM) (VMChange, error) {
				used := 0
				for _, v := range vms {
					used += v.VCPUs
				}
				if used+1 > nodes[0].Inventory.CPU.Count {
					return VMChange{}, fmt.Errorf("full")
				}
				return VMChange{Put: []api.VM{{ID: fmt.Sprintf("vm-%d", i), Node: "h", VCPUs: 1}}}, nil
			})
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	vms, err := s.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ok != 4 || len(vms) != 4 {
		t.Errorf("%d placements succeeded and %d VMs stored; want 4 and 4 (4 CPUs)", ok, len(vms))
	}
	got, err := s.Node(ctx, "h")
	if err != nil {
		t.Fatal(err)
	}
	if got.VMGen != 4 {
		t.Errorf("VMGen = %d, want 4 (one per change)", got.VMGen)
	}
	// Observed-state writes leave the node (and its goal) alone.
	if err := s.UpdateVMStatuses(ctx, []string{vms[0].ID}, func(v *api.VM) bool { v.State = api.VMStateRunning; return true }); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Node(ctx, "h"); again.VMGen != 4 {
		t.Errorf("a status write moved VMGen to %d", again.VMGen)
	}
	if _, err := s.ChangeVMs(ctx, func(_ []api.Node, _ []api.VM) (VMChange, error) {
		return VMChange{Delete: []string{vms[0].ID}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.VMs(ctx); len(left) != 3 {
		t.Errorf("%d VMs after a delete, want 3", len(left))
	}
}
