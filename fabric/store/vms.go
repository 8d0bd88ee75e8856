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
}

// ChangeVMs applies fn to a consistent view of every node and VM, and
// writes its change together with a bump of VMGen on each node whose VMs
// changed (so that node's goal incarnation moves). The whole is one
// transaction guarded by the revisions read: a concurrent change to any
// node or VM involved makes it start over, so two placements can never
// both take the last free room of a host.
func (s *Store) ChangeVMs(ctx context.Context, fn func(nodes []api.Node, vms []api.VM) (VMChange, error)) (VMChange, error) {
	for attempt := 0; ; attempt++ {
		nodes, nrevs, err := s.nodeC.listRev(ctx, nil)
		if err != nil {
			return VMChange{}, err
		}
		nodeRev := map[string]int64{}
		for i, n := range nodes {
			nodeRev[n.ID] = nrevs[i]
		}
		vms, revs, err := s.vmC.listRev(ctx, nil)
		if err != nil {
			return VMChange{}, err
		}
		vmRev := map[string]int64{}
		vmNode := map[string]string{}
		for i, v := range vms {
			vmRev[v.ID], vmNode[v.ID] = revs[i], v.Node
		}
		ch, err := fn(nodes, vms)
		if err != nil {
			return VMChange{}, err
		}
		touched := map[string]bool{}
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, v := range ch.Put {
			b, err := json.Marshal(v)
			if err != nil {
				return VMChange{}, err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.vms().key(v.ID)), "=", vmRev[v.ID]))
			ops = append(ops, clientv3.OpPut(s.vms().key(v.ID), string(b)))
			touched[v.Node] = true
		}
		for _, id := range ch.Delete {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.vms().key(id)), "=", vmRev[id]))
			ops = append(ops, clientv3.OpDelete(s.vms().key(id)))
			touched[vmNode[id]] = true
		}
		for _, n := range nodes {
			if !touched[n.ID] {
				continue
			}
			n.VMGen++
			b, err := json.Marshal(n)
			if err != nil {
				return VMChange{}, err
			}
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.nodes().key(n.ID)), "=", nodeRev[n.ID]))
			ops = append(ops, clientv3.OpPut(s.nodes().key(n.ID), string(b)))
		}
		if len(ops) == 0 {
			return ch, nil
		}
		r, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return VMChange{}, fmt.Errorf("changing VMs: %w", err)
		}
		if r.Succeeded {
			return ch, nil
		}
		if attempt > 100 {
			return VMChange{}, fmt.Errorf("changing VMs: too much contention")
		}
	}
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
		if err := s.sync(ctx); err != nil {
			return err
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
		r, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
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
