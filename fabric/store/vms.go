package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

func vmKey(id string) string { return prefix + "vms/" + id }

// VMs lists every VM with its modification revision.
func (s *Store) vmsRev(ctx context.Context) ([]api.VM, []int64, error) {
	r, err := s.cli.Get(ctx, prefix+"vms/", clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("listing VMs: %w", err)
	}
	vms := make([]api.VM, 0, len(r.Kvs))
	revs := make([]int64, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		v, err := decode[api.VM](kv.Value)
		if err != nil {
			return nil, nil, fmt.Errorf("decoding VM %s: %w", kv.Key, err)
		}
		vms = append(vms, v)
		revs = append(revs, kv.ModRevision)
	}
	return vms, revs, nil
}

// VMs lists every VM.
func (s *Store) VMs(ctx context.Context) ([]api.VM, error) {
	vms, _, err := s.vmsRev(ctx)
	return vms, err
}

// VM reads one VM.
func (s *Store) VM(ctx context.Context, id string) (api.VM, error) {
	b, _, err := s.get(ctx, vmKey(id))
	if err != nil {
		return api.VM{}, err
	}
	return decode[api.VM](b)
}

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
		nr, err := s.cli.Get(ctx, prefix+"nodes/", clientv3.WithPrefix())
		if err != nil {
			return VMChange{}, fmt.Errorf("listing nodes: %w", err)
		}
		nodes := make([]api.Node, 0, len(nr.Kvs))
		nodeRev := map[string]int64{}
		for _, kv := range nr.Kvs {
			n, err := decode[api.Node](kv.Value)
			if err != nil {
				return VMChange{}, fmt.Errorf("decoding node %s: %w", kv.Key, err)
			}
			nodes = append(nodes, n)
			nodeRev[n.ID] = kv.ModRevision
		}
		vms, revs, err := s.vmsRev(ctx)
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
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(vmKey(v.ID)), "=", vmRev[v.ID]))
			ops = append(ops, clientv3.OpPut(vmKey(v.ID), string(b)))
			touched[v.Node] = true
		}
		for _, id := range ch.Delete {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(vmKey(id)), "=", vmRev[id]))
			ops = append(ops, clientv3.OpDelete(vmKey(id)))
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
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nodeKey(n.ID)), "=", nodeRev[n.ID]))
			ops = append(ops, clientv3.OpPut(nodeKey(n.ID), string(b)))
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

// UpdateVMStatus applies fn to one VM's stored record and writes it back
// (compare-and-swap). Observed state only: the node's goal does not move.
func (s *Store) UpdateVMStatus(ctx context.Context, id string, fn func(*api.VM) error) error {
	for attempt := 0; ; attempt++ {
		b, rev, err := s.get(ctx, vmKey(id))
		if err != nil {
			return err
		}
		v, err := decode[api.VM](b)
		if err != nil {
			return fmt.Errorf("decoding VM %s: %w", id, err)
		}
		if err := fn(&v); err != nil {
			return err
		}
		nb, err := json.Marshal(v)
		if err != nil {
			return err
		}
		r, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(vmKey(id)), "=", rev)).
			Then(clientv3.OpPut(vmKey(id), string(nb))).Commit()
		if err != nil {
			return fmt.Errorf("updating VM %s: %w", id, err)
		}
		if r.Succeeded {
			return nil
		}
		if attempt > 100 {
			return fmt.Errorf("updating VM %s: too much contention", id)
		}
	}
}
