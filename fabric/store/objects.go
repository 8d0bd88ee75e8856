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

func macKey(mac string) string   { return prefix + "index/mac/" + mac }
func uuidKey(uuid string) string { return prefix + "index/uuid/" + uuid }
func credKey(id string) string   { return prefix + "creds/" + id }

// Nodes lists every node.
func (s *Store) Nodes(ctx context.Context) ([]api.Node, error) { return s.nodeC.list(ctx, nil) }

// Node reads one node.
func (s *Store) Node(ctx context.Context, id string) (api.Node, error) { return s.nodeC.get(ctx, id) }

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
	keys := []string{s.nodes().key(n.ID)}
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
	r, err := s.txn(ctx).If(cmps...).Then(ops...).Commit()
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
		k := s.nodes().key(w.Node.ID)
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
	r, err := s.txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("writing %d nodes: %w", len(ws), err)
	}
	if !r.Succeeded {
		return fmt.Errorf("writing %d nodes: a node or MAC changed meanwhile: %w", len(ws), ErrExists)
	}
	return nil
}

// indexKeys are the index keys of macs and uuid ("" for none).
func indexKeys(macs []string, uuid string) []string {
	keys := make([]string, 0, len(macs)+1)
	for _, m := range macs {
		keys = append(keys, macKey(m))
	}
	if uuid != "" {
		keys = append(keys, uuidKey(uuid))
	}
	return keys
}

// ClaimIndexes points MACs and a UUID that no node owns yet at id. Those
// owned by another node are left alone.
func (s *Store) ClaimIndexes(ctx context.Context, id string, macs []string, uuid string) error {
	for _, k := range indexKeys(macs, uuid) {
		_, err := s.txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
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
	return s.nodes().update(ctx, id, fn)
}

// SetCredential stores the hash of a node's credential.
func (s *Store) SetCredential(ctx context.Context, id, hash string) error {
	if _, err := s.txn(ctx).Then(clientv3.OpPut(credKey(id), hash)).Commit(); err != nil {
		return fmt.Errorf("storing credential of %s: %w", id, err)
	}
	return nil
}

// Credential reads the hash of a node's credential.
func (s *Store) Credential(ctx context.Context, id string) (string, error) {
	return s.credC.get(ctx, id)
}

// Leases lists every DHCP lease, expired ones included.
func (s *Store) Leases(ctx context.Context) ([]api.Lease, error) { return s.leases().all(ctx) }

// IsNotFound reports whether err is (or wraps) ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Ping checks the store answers within d.
func (s *Store) Ping(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := s.cli.Get(ctx, prefix+"ping")
	return err
}

// CreateImage stores a manifest under its name; ErrExists if taken.
func (s *Store) CreateImage(ctx context.Context, m api.Manifest) error {
	return s.images().create(ctx, m.Name, m)
}

// Image reads one manifest.
func (s *Store) Image(ctx context.Context, name string) (api.Manifest, error) {
	return s.imgC.get(ctx, name)
}

// Images lists every manifest.
func (s *Store) Images(ctx context.Context) ([]api.Manifest, error) { return s.imgC.list(ctx, nil) }

// DeleteImage removes a manifest.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	return s.images().del(ctx, name)
}

// PutProfile creates or replaces a profile.
func (s *Store) PutProfile(ctx context.Context, p api.Profile) error {
	return s.profiles().put(ctx, p.Name, p)
}

// Profile reads one profile.
func (s *Store) Profile(ctx context.Context, name string) (api.Profile, error) {
	return s.profiles().get(ctx, name)
}

// Profiles lists every profile.
func (s *Store) Profiles(ctx context.Context) ([]api.Profile, error) { return s.profiles().all(ctx) }

// DeleteProfile removes a profile.
func (s *Store) DeleteProfile(ctx context.Context, name string) error {
	return s.profiles().del(ctx, name)
}

// NodeRev reads a node with its modification revision (the incarnation of
// its goal state).
func (s *Store) NodeRev(ctx context.Context, id string) (api.Node, int64, error) {
	return s.nodeC.getRev(ctx, id)
}

// WaitNode blocks until the node changes after revision rev, or ctx ends.
func (s *Store) WaitNode(ctx context.Context, id string, rev int64) error {
	return s.nodeC.wait(ctx, id, rev)
}

// SharedSecret is the cluster's value of a secret every replica must
// agree on (a token): the first replica to ask stores its own, local;
// every later one gets that. Any replica may ask, leader or not.
func (s *Store) SharedSecret(ctx context.Context, name, local string) (string, error) {
	key := prefix + "secrets/" + name
	r, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, local)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return "", fmt.Errorf("secret %s: %w", name, err)
	}
	if r.Succeeded {
		return local, nil
	}
	kvs := r.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return "", fmt.Errorf("secret %s: vanished while read", name)
	}
	return string(kvs[0].Value), nil
}

// DeleteNode removes a node, its certificate's record (so the node's
// certificate is refused from then on) and the index keys among macs and
// uuid that still point at it; ErrNotFound if there is no such node.
func (s *Store) DeleteNode(ctx context.Context, id string, macs []string, uuid string) error {
	nk := s.nodes().key(id)
	ops := []clientv3.Op{clientv3.OpDelete(nk), clientv3.OpDelete(credKey(id))}
	for _, k := range indexKeys(macs, uuid) {
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", id)}, []clientv3.Op{clientv3.OpDelete(k)}, nil))
	}
	r, err := s.txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(nk), ">", 0)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("deleting node %s: %w", id, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("node %s: %w", id, ErrNotFound)
	}
	return nil
}
