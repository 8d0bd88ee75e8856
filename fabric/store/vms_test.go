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

// A change bigger than one transaction lands whole, in several, each
// bumping the goal of the nodes it touched; one whose later transaction
// meets a conflict returns the prefix that landed, and only that is
// stored.
func TestChangeVMsBeyondOneTransaction(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	const nodes = 700
	for i := range nodes {
		if err := s.CreateNode(ctx, api.Node{ID: fmt.Sprintf("h%03d", i), Phase: api.PhaseReady}, nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	// 1,400 VMs, two per node: 2,800 operations with the bumps.
	var ch VMChange
	for i := range 2 * nodes {
		ch.Put = append(ch.Put, api.VM{ID: fmt.Sprintf("vm-%04d", i), Node: fmt.Sprintf("h%03d", i%nodes)})
	}
	got, err := s.ChangeVMs(ctx, func([]api.Node, []api.VM) (VMChange, error) { return ch, nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Put) != len(ch.Put) {
		t.Fatalf("ChangeVMs wrote %d of %d", len(got.Put), len(ch.Put))
	}
	vms, _ := s.VMs(ctx)
	if len(vms) != 2*nodes {
		t.Fatalf("%d VMs stored, want %d", len(vms), 2*nodes)
	}
	all, _ := s.Nodes(ctx)
	for _, n := range all {
		if n.VMGen < 1 || n.VMGen > 2 {
			t.Fatalf("node %s VMGen %d, want 1 or 2 (once per transaction that touched it)", n.ID, n.VMGen)
		}
	}

	// The second transaction's guard fails: the first one's part stands.
	nodeList, nrevs, _ := s.nodeC.listRev(ctx, nil)
	c := vmChanger{s: s, nodes: nodeList, nodeAt: map[string]int{}, nodeRev: map[string]int64{}, vmRev: map[string]int64{}, vmNode: map[string]string{}}
	for i, n := range nodeList {
		c.nodeAt[n.ID], c.nodeRev[n.ID] = i, nrevs[i]
	}
	var more VMChange
	for i := range 1200 {
		more.Put = append(more.Put, api.VM{ID: fmt.Sprintf("new-%04d", i), Node: fmt.Sprintf("h%03d", i%nodes)})
	}
	c.vmRev["new-1100"] = 42 // as if read at a revision it no longer has
	done, err := c.write(ctx, more)
	if err != nil {
		t.Fatal(err)
	}
	if len(done.Put) == 0 || len(done.Put) >= 1100 {
		t.Fatalf("wrote %d of 1,200 with a conflict at the 1,101st: want the first transaction's part", len(done.Put))
	}
	for i, v := range done.Put {
		if v.ID != more.Put[i].ID {
			t.Fatalf("wrote %s at %d: not a prefix", v.ID, i)
		}
	}
	vms, _ = s.VMs(ctx)
	if len(vms) != 2*nodes+len(done.Put) {
		t.Errorf("%d VMs stored, want %d", len(vms), 2*nodes+len(done.Put))
	}
}

// A paced change goes in transactions of Chunk VMs with Between called
// between two; an error from Between stops it there.
func TestChangeVMsPaced(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	if err := s.CreateNode(ctx, api.Node{ID: "h", Phase: api.PhaseReady}, nil, ""); err != nil {
		t.Fatal(err)
	}
	change := func(from, n, stopAfter int) (VMChange, int) {
		var ch VMChange
		for i := range n {
			ch.Put = append(ch.Put, api.VM{ID: fmt.Sprintf("vm-%04d", from+i), Node: "h"})
		}
		pauses := 0
		ch.Chunk = 100
		ch.Between = func(context.Context) error {
			if pauses++; pauses == stopAfter {
				return fmt.Errorf("stop")
			}
			return nil
		}
		got, err := s.ChangeVMs(ctx, func([]api.Node, []api.VM) (VMChange, error) { return ch, nil })
		if err != nil {
			t.Fatal(err)
		}
		return got, pauses
	}
	got, pauses := change(0, 250, 0)
	if len(got.Put) != 250 || pauses != 2 {
		t.Errorf("250 VMs in chunks of 100: wrote %d with %d pauses, want 250 with 2", len(got.Put), pauses)
	}
	if n, _ := s.Node(ctx, "h"); n.VMGen != 3 {
		t.Errorf("VMGen %d after 3 transactions, want 3", n.VMGen)
	}
	got, _ = change(1000, 250, 2)
	if len(got.Put) != 200 {
		t.Errorf("stopped at the second pause: wrote %d, want 200", len(got.Put))
	}
	if vms, _ := s.VMs(ctx); len(vms) != 450 {
		t.Errorf("%d VMs stored, want 450", len(vms))
	}
}
