package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

func nodeKey(id string) string   { return prefix + "nodes/" + id }
func macKey(mac string) string   { return prefix + "index/mac/" + mac }
func uuidKey(uuid string) string { return prefix + "index/uuid/" + uuid }
func credKey(id string) string   { return prefix + "creds/" + id }
func leaseKey(mac string) string { return prefix + "leases/" + mac }
func decode[T any](b []byte) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

// Nodes lists every node.
func (s *Store) Nodes(ctx context.Context) ([]api.Node, error) {
	vals, err := s.list(ctx, prefix+"nodes/")
	if err != nil {
		return nil, err
	}
	nodes := make([]api.Node, 0, len(vals))
	for _, v := range vals {
		n, err := decode[api.Node](v)
		if err != nil {
			return nil, fmt.Errorf("decoding node: %w", err)
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// Node reads one node.
func (s *Store) Node(ctx context.Context, id string) (api.Node, error) {
	b, _, err := s.get(ctx, nodeKey(id))
	if err != nil {
		return api.Node{}, err
	}
	n, err := decode[api.Node](b)
	if err != nil {
		return api.Node{}, fmt.Errorf("decoding node %s: %w", id, err)
	}
	return n, nil
}

// NodeIDByMAC finds the node that owns a MAC.
func (s *Store) NodeIDByMAC(ctx context.Context, mac string) (string, error) {
	b, _, err := s.get(ctx, macKey(mac))
	return string(b), err
}

// NodeIDsByMAC finds the nodes that own macs, in as few reads as the
// transaction limit allows: a MAC no node owns is not in the map.
func (s *Store) NodeIDsByMAC(ctx context.Context, macs []string) (map[string]string, error) {
	ids := make(map[string]string, len(macs))
	for len(macs) > 0 {
		chunk := macs[:min(len(macs), MaxTxnOps)]
		macs = macs[len(chunk):]
		ops := make([]clientv3.Op, len(chunk))
		for i, m := range chunk {
			ops[i] = clientv3.OpGet(macKey(m))
		}
		r, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("looking up %d MACs: %w", len(chunk), err)
		}
		for i, rr := range r.Responses {
			if kvs := rr.GetResponseRange().Kvs; len(kvs) > 0 {
				ids[chunk[i]] = string(kvs[0].Value)
			}
		}
	}
	return ids, nil
}

// NodeIDByUUID finds the node with a DMI UUID.
func (s *Store) NodeIDByUUID(ctx context.Context, uuid string) (string, error) {
	b, _, err := s.get(ctx, uuidKey(uuid))
	return string(b), err
}

// CreateNode writes a new node and claims its MACs and UUID in one
// transaction. It fails with ErrExists if any of them is already claimed.
func (s *Store) CreateNode(ctx context.Context, n api.Node, macs []string, uuid string) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	keys := []string{nodeKey(n.ID)}
	for _, m := range macs {
		keys = append(keys, macKey(m))
	}
	if uuid != "" {
		keys = append(keys, uuidKey(uuid))
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for i, k := range keys {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
		if i == 0 {
			ops = append(ops, clientv3.OpPut(k, string(b)))
		} else {
			ops = append(ops, clientv3.OpPut(k, n.ID))
		}
	}
	r, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("creating node %s: %w", n.ID, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("creating node %s: %w", n.ID, ErrExists)
	}
	return nil
}

// NodeWrite is one node of a batch: a new node (Rev 0) claiming MACs, or
// the stored node as it was read at Rev, changed.
type NodeWrite struct {
	Node api.Node
	MACs []string // new nodes only
	Rev  int64
}

// WriteNodes writes a batch of nodes in one transaction: all of them or,
// if any MAC has been claimed or any node changed since it was read, none
// (ErrExists).
func (s *Store) WriteNodes(ctx context.Context, ws []NodeWrite) error {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, w := range ws {
		b, err := json.Marshal(w.Node)
		if err != nil {
			return err
		}
		k := nodeKey(w.Node.ID)
		if w.Rev == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k), "=", 0))
			for _, m := range w.MACs {
				cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(macKey(m)), "=", 0))
				ops = append(ops, clientv3.OpPut(macKey(m), w.Node.ID))
			}
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", w.Rev))
		}
		ops = append(ops, clientv3.OpPut(k, string(b)))
	}
	if len(cmps) > MaxTxnOps || len(ops) > MaxTxnOps {
		return fmt.Errorf("writing %d nodes: more than one transaction holds (%d operations)", len(ws), MaxTxnOps)
	}
	r, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("writing %d nodes: %w", len(ws), err)
	}
	if !r.Succeeded {
		return fmt.Errorf("writing %d nodes: a node or MAC changed meanwhile: %w", len(ws), ErrExists)
	}
	return nil
}

// ClaimIndexes points MACs and a UUID that no node owns yet at id. Those
// owned by another node are left alone.
func (s *Store) ClaimIndexes(ctx context.Context, id string, macs []string, uuid string) error {
	keys := make([]string, 0, len(macs)+1)
	for _, m := range macs {
		keys = append(keys, macKey(m))
	}
	if uuid != "" {
		keys = append(keys, uuidKey(uuid))
	}
	for _, k := range keys {
		_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, id)).Commit()
		if err != nil {
			return fmt.Errorf("indexing node %s: %w", id, err)
		}
	}
	return nil
}

// UpdateNode applies fn to the stored node and writes it back if nothing
// else changed it meanwhile (compare-and-swap, retried).
func (s *Store) UpdateNode(ctx context.Context, id string, fn func(*api.Node) error) (api.Node, error) {
	for attempt := 0; ; attempt++ {
		b, rev, err := s.get(ctx, nodeKey(id))
		if err != nil {
			return api.Node{}, err
		}
		n, err := decode[api.Node](b)
		if err != nil {
			return api.Node{}, fmt.Errorf("decoding node %s: %w", id, err)
		}
		if err := fn(&n); err != nil {
			return api.Node{}, err
		}
		nb, err := json.Marshal(n)
		if err != nil {
			return api.Node{}, err
		}
		r, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(nodeKey(id)), "=", rev)).
			Then(clientv3.OpPut(nodeKey(id), string(nb))).Commit()
		if err != nil {
			return api.Node{}, fmt.Errorf("updating node %s: %w", id, err)
		}
		if r.Succeeded {
			return n, nil
		}
		if attempt > 100 {
			return api.Node{}, fmt.Errorf("updating node %s: too much contention", id)
		}
	}
}

// SetCredential stores the hash of a node's credential.
func (s *Store) SetCredential(ctx context.Context, id, hash string) error {
	if _, err := s.cli.Put(ctx, credKey(id), hash); err != nil {
		return fmt.Errorf("storing credential of %s: %w", id, err)
	}
	return nil
}

// Credential reads the hash of a node's credential.
func (s *Store) Credential(ctx context.Context, id string) (string, error) {
	b, _, err := s.get(ctx, credKey(id))
	return string(b), err
}

// Leases lists every DHCP lease, expired ones included.
func (s *Store) Leases(ctx context.Context) ([]api.Lease, error) {
	vals, err := s.list(ctx, prefix+"leases/")
	if err != nil {
		return nil, err
	}
	out := make([]api.Lease, 0, len(vals))
	for _, v := range vals {
		l, err := decode[api.Lease](v)
		if err != nil {
			return nil, fmt.Errorf("decoding lease: %w", err)
		}
		out = append(out, l)
	}
	return out, nil
}

// CommitLeases writes puts and removes the leases of the MACs in dels in
// one transaction (at most MaxTxnOps operations in all).
func (s *Store) CommitLeases(ctx context.Context, puts []api.Lease, dels []string) error {
	if len(puts)+len(dels) > MaxTxnOps {
		return fmt.Errorf("committing leases: %d operations, at most %d", len(puts)+len(dels), MaxTxnOps)
	}
	ops := make([]clientv3.Op, 0, len(puts)+len(dels))
	for _, l := range puts {
		b, err := json.Marshal(l)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(leaseKey(l.MAC), string(b)))
	}
	for _, m := range dels {
		ops = append(ops, clientv3.OpDelete(leaseKey(m)))
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("committing %d lease changes: %w", len(ops), err)
	}
	return nil
}

// IsNotFound reports whether err is (or wraps) ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Ping checks the store answers within d.
func (s *Store) Ping(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := s.cli.Get(ctx, prefix+"ping")
	return err
}

func imageKey(name string) string { return prefix + "images/" + name }

// CreateImage stores a manifest under its name; ErrExists if taken.
func (s *Store) CreateImage(ctx context.Context, m api.Manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	r, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(imageKey(m.Name)), "=", 0)).
		Then(clientv3.OpPut(imageKey(m.Name), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("storing image %s: %w", m.Name, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("image %s: %w", m.Name, ErrExists)
	}
	return nil
}

// Image reads one manifest.
func (s *Store) Image(ctx context.Context, name string) (api.Manifest, error) {
	b, _, err := s.get(ctx, imageKey(name))
	if err != nil {
		return api.Manifest{}, err
	}
	return decode[api.Manifest](b)
}

// Images lists every manifest.
func (s *Store) Images(ctx context.Context) ([]api.Manifest, error) {
	vals, err := s.list(ctx, prefix+"images/")
	if err != nil {
		return nil, err
	}
	out := make([]api.Manifest, 0, len(vals))
	for _, v := range vals {
		m, err := decode[api.Manifest](v)
		if err != nil {
			return nil, fmt.Errorf("decoding image: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}

// DeleteImage removes a manifest.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	r, err := s.cli.Delete(ctx, imageKey(name))
	if err != nil {
		return fmt.Errorf("deleting image %s: %w", name, err)
	}
	if r.Deleted == 0 {
		return fmt.Errorf("image %s: %w", name, ErrNotFound)
	}
	return nil
}

func profileKey(name string) string { return prefix + "profiles/" + name }

// PutProfile creates or replaces a profile.
func (s *Store) PutProfile(ctx context.Context, p api.Profile) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, profileKey(p.Name), string(b)); err != nil {
		return fmt.Errorf("storing profile %s: %w", p.Name, err)
	}
	return nil
}

// Profile reads one profile.
func (s *Store) Profile(ctx context.Context, name string) (api.Profile, error) {
	b, _, err := s.get(ctx, profileKey(name))
	if err != nil {
		return api.Profile{}, err
	}
	return decode[api.Profile](b)
}

// Profiles lists every profile.
func (s *Store) Profiles(ctx context.Context) ([]api.Profile, error) {
	vals, err := s.list(ctx, prefix+"profiles/")
	if err != nil {
		return nil, err
	}
	out := make([]api.Profile, 0, len(vals))
	for _, v := range vals {
		p, err := decode[api.Profile](v)
		if err != nil {
			return nil, fmt.Errorf("decoding profile: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// DeleteProfile removes a profile.
func (s *Store) DeleteProfile(ctx context.Context, name string) error {
	r, err := s.cli.Delete(ctx, profileKey(name))
	if err != nil {
		return fmt.Errorf("deleting profile %s: %w", name, err)
	}
	if r.Deleted == 0 {
		return fmt.Errorf("profile %s: %w", name, ErrNotFound)
	}
	return nil
}

// NodeRev reads a node with its modification revision (the incarnation of
// its goal state).
func (s *Store) NodeRev(ctx context.Context, id string) (api.Node, int64, error) {
	b, rev, err := s.get(ctx, nodeKey(id))
	if err != nil {
		return api.Node{}, 0, err
	}
	n, err := decode[api.Node](b)
	return n, rev, err
}

// WaitNode blocks until the node changes after revision rev, or ctx ends.
func (s *Store) WaitNode(ctx context.Context, id string, rev int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range s.cli.Watch(ctx, nodeKey(id), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			return err
		}
		if len(resp.Events) > 0 {
			return nil
		}
	}
	return ctx.Err()
}
