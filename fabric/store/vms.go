package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

// VMs lists every VM.
func (s *Store) VMs(ctx context.Context) ([]api.VM, error) {
	return s.vmC.list(ctx, nil)
}

// VMsWhere lists the VMs keep accepts (keep must not change them).
func (s *Store) VMsWhere(ctx context.Context, keep func(*api.VM) bool) ([]api.VM, error) {
	return s.vmC.list(ctx, keep)
}

// VMsOn lists node's VMs.
func (s *Store) VMsOn(ctx context.Context, node string) ([]api.VM, error) {
	return s.vmC.byIndex(ctx, node)
}

// VM reads one VM.
func (s *Store) VM(ctx context.Context, id string) (api.VM, error) { return s.vmC.get(ctx, id) }

// VMChange is what a PlaceVMs function decides: VMs to write and VM IDs
// to delete.
type VMChange struct {
	Put    []api.VM
	Delete []string
	// Between, if set, is called between two transactions of a change too
	// big for one (see ChangeVMs): a pause that lets the hosts take in
	// what was written before more comes. An error stops the change
	// there, like a conflict.
	Between func(context.Context) error `json:"-"`
	// Chunk, if set, is the most VMs one transaction carries (smaller
	// bites, for Between to pace).
	Chunk int `json:"-"`
}

// ChangeVMs applies fn to a consistent view of every node and VM, and
// writes its change together with a bump of VMGen on each node whose VMs
// changed (so that node's goal incarnation moves). A change is one
// transaction guarded by the revisions read: a concurrent change to any
// node or VM involved makes it start over, so two placements can never
// both take the last free room of a host.
//
// A change too big for one transaction (MaxTxnOps) is written in several,
// in fn's order, each guarded the same way (a node bumped by an earlier
// one is compared at the revision that one gave it). If a later one meets
// a conflict, ChangeVMs returns the part that landed — a prefix of fn's
// change, as sound as a smaller change would have been — and the caller
// plans the rest again from a fresh view.
func (s *Store) ChangeVMs(ctx context.Context, fn func(nodes []api.Node, vms []api.VM) (VMChange, error)) (VMChange, error) {
	for attempt := 0; ; attempt++ {
		nodes, nrevs, err := s.nodeC.listRev(ctx, nil)
		if err != nil {
			return VMChange{}, err
		}
		nodeAt := make(map[string]int, len(nodes))
		nodeRev := make(map[string]int64, len(nodes))
		for i, n := range nodes {
			nodeAt[n.ID], nodeRev[n.ID] = i, nrevs[i]
		}
		vms, revs, err := s.vmC.listRev(ctx, nil)
		if err != nil {
			return VMChange{}, err
		}
		vmRev := make(map[string]int64, len(vms))
		vmNode := make(map[string]string, len(vms))
		for i, v := range vms {
			vmRev[v.ID], vmNode[v.ID] = revs[i], v.Node
		}
		ch, err := fn(nodes, vms)
		if err != nil {
			return VMChange{}, err
		}
		c := vmChanger{s: s, nodes: nodes, nodeAt: nodeAt, nodeRev: nodeRev, vmRev: vmRev, vmNode: vmNode}
		done, err := c.write(ctx, ch)
		if err != nil {
			return VMChange{}, err
		}
		if done.Put != nil || done.Delete != nil || len(ch.Put)+len(ch.Delete) == 0 {
			return done, nil
		}
		if attempt > 100 {
			return VMChange{}, fmt.Errorf("changing VMs: too much contention")
		}
	}
}

// vmChanger writes one ChangeVMs change, a transaction at a time.
type vmChanger struct {
	s       *Store
	nodes   []api.Node
	nodeAt  map[string]int   // a node's place in nodes
	nodeRev map[string]int64 // as read, then as the last transaction left it
	vmRev   map[string]int64
	vmNode  map[string]string
}

// write writes ch in transactions of at most MaxTxnOps operations and
// returns what landed: all of ch, a prefix of it, or nothing (a zero
// VMChange) when the first transaction met a conflict.
func (c *vmChanger) write(ctx context.Context, ch VMChange) (VMChange, error) {
	var done VMChange
	puts, dels := ch.Put, ch.Delete
	for len(puts)+len(dels) > 0 {
		if ch.Between != nil && (done.Put != nil || done.Delete != nil) {
			if err := ch.Between(ctx); err != nil {
				return done, nil
			}
		}
		// Take writes in order while they and their nodes' bumps fit.
		touched := map[string]bool{}
		np, nd := 0, 0
		fits := func(node string) bool {
			ops := np + nd + len(touched) + 1
			if node != "" && !touched[node] {
				ops++
			}
			return ops <= MaxTxnOps
		}
		for np < len(puts) && fits(puts[np].Node) && (ch.Chunk <= 0 || np < ch.Chunk) {
			touched[puts[np].Node] = true
			np++
		}
		for np == len(puts) && nd < len(dels) && fits(c.vmNode[dels[nd]]) && (ch.Chunk <= 0 || np+nd < ch.Chunk) {
			touched[c.vmNode[dels[nd]]] = true
			nd++
		}
		delete(touched, "")
		ok, err := c.txn(ctx, puts[:np], dels[:nd], touched)
		if err != nil || !ok {
			return done, err
		}
		done.Put = append(done.Put, puts[:np]...)
		done.Delete = append(done.Delete, dels[:nd]...)
		puts, dels = puts[np:], dels[nd:]
	}
	return done, nil
}

// txn writes puts and dels and bumps the touched nodes' VMGen, guarded by
// the revisions c holds; ok false: a conflict, nothing written.
func (c *vmChanger) txn(ctx context.Context, puts []api.VM, dels []string, touched map[string]bool) (ok bool, err error) {
	vmKey, nodeKey := c.s.vms().key, c.s.nodes().key
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, v := range puts {
		b, err := json.Marshal(v)
		if err != nil {
			return false, err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(vmKey(v.ID)), "=", c.vmRev[v.ID]))
		ops = append(ops, clientv3.OpPut(vmKey(v.ID), string(b)))
	}
	for _, id := range dels {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(vmKey(id)), "=", c.vmRev[id]))
		ops = append(ops, clientv3.OpDelete(vmKey(id)))
	}
	bumped := make([]int, 0, len(touched))
	for id := range touched {
		i, known := c.nodeAt[id]
		if !known {
			continue // no such node: the VMs' own guards decide
		}
		n := c.nodes[i]
		n.VMGen++
		b, err := json.Marshal(n)
		if err != nil {
			return false, err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nodeKey(id)), "=", c.nodeRev[id]))
		ops = append(ops, clientv3.OpPut(nodeKey(id), string(b)))
		bumped = append(bumped, i)
	}
	if len(ops) == 0 {
		return true, nil
	}
	r, err := c.s.txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("changing VMs: %w", err)
	}
	if !r.Succeeded {
		return false, nil
	}
	for _, i := range bumped {
		c.nodes[i].VMGen++
		c.nodeRev[c.nodes[i].ID] = r.Header.Revision
	}
	return true, nil
}

// UpdateVMStatuses applies fn to the stored record of each VM in ids (a
// host's report: observed state only, so no goal moves) and writes those
// fn changed, in one transaction compare-and-swap on their revisions
// (tried again on a conflict). A VM gone meanwhile is skipped.
func (s *Store) UpdateVMStatuses(ctx context.Context, ids []string, fn func(*api.VM) bool) error {
	for len(ids) > 0 {
		n := min(len(ids), MaxTxnOps/2)
		if err := s.updateVMStatuses(ctx, ids[:n], fn); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

func (s *Store) updateVMStatuses(ctx context.Context, ids []string, fn func(*api.VM) bool) error {
	for attempt := 0; ; attempt++ {
		// The guards make a stale copy cost a retry, not a lost update:
		// the first attempt reads the copy as it is, unless a VM is not
		// in it yet (it would be skipped as gone).
		if attempt > 0 || !s.vmC.hasAll(ids) {
			if err := s.sync(ctx); err != nil {
				return err
			}
		}
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, id := range ids {
			v, rev, ok := s.vmC.peek(id)
			if !ok || !fn(&v) {
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				return err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.vms().key(id)), "=", rev))
			ops = append(ops, clientv3.OpPut(s.vms().key(id), string(b)))
		}
		if len(ops) == 0 {
			return nil
		}
		r, err := s.txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("updating VM states: %w", err)
		}
		if r.Succeeded {
			return nil
		}
		if attempt > 100 {
			return fmt.Errorf("updating VM states: too much contention")
		}
	}
}
