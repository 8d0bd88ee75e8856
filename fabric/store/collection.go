package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

// collection is one kind of object kept as JSON under a key prefix, by
// name: get, list, put, create, update (compare-and-swap on the revision,
// retried) and delete. (Waiting for a change is the cached copy's.) Each kind of object the store
// keeps is one of these plus what is particular to it (indexes, batches).
type collection[T any] struct {
	s      *Store
	prefix string // e.g. prefix + "credentials/"
	kind   string // e.g. "credential", for errors
}

func (c collection[T]) key(name string) string { return c.prefix + name }

// getRev reads one object and its modification revision; ErrNotFound if
// absent.
func (c collection[T]) getRev(ctx context.Context, name string) (T, int64, error) {
	var v T
	r, err := c.s.cli.Get(ctx, c.key(name))
	if err != nil {
		return v, 0, fmt.Errorf("reading %s %s: %w", c.kind, name, err)
	}
	if len(r.Kvs) == 0 {
		return v, 0, fmt.Errorf("%s %s: %w", c.kind, name, ErrNotFound)
	}
	if err := json.Unmarshal(r.Kvs[0].Value, &v); err != nil {
		return v, 0, fmt.Errorf("decoding %s %s: %w", c.kind, name, err)
	}
	return v, r.Kvs[0].ModRevision, nil
}

func (c collection[T]) get(ctx context.Context, name string) (T, error) {
	v, _, err := c.getRev(ctx, name)
	return v, err
}

// all lists every object of the kind, in key order.
func (c collection[T]) all(ctx context.Context) ([]T, error) {
	r, err := c.s.cli.Get(ctx, c.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("listing %ss: %w", c.kind, err)
	}
	out := make([]T, len(r.Kvs))
	for i, kv := range r.Kvs {
		if err := json.Unmarshal(kv.Value, &out[i]); err != nil {
			return nil, fmt.Errorf("decoding %s %s: %w", c.kind, kv.Key[len(c.prefix):], err)
		}
	}
	return out, nil
}

// put creates or replaces an object.
func (c collection[T]) put(ctx context.Context, name string, v T) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := c.s.txn(ctx).Then(clientv3.OpPut(c.key(name), string(b))).Commit(); err != nil {
		return fmt.Errorf("storing %s %s: %w", c.kind, name, err)
	}
	return nil
}

// create stores an object that must not exist yet: ErrExists if it does.
func (c collection[T]) create(ctx context.Context, name string, v T) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	r, err := c.s.txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(c.key(name)), "=", 0)).
		Then(clientv3.OpPut(c.key(name), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("storing %s %s: %w", c.kind, name, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("%s %s: %w", c.kind, name, ErrExists)
	}
	return nil
}

// update applies fn to the stored object and writes it back if nothing
// else changed it meanwhile (compare-and-swap on its revision), reading
// and trying again otherwise. An error from fn ends it with nothing
// written.
func (c collection[T]) update(ctx context.Context, name string, fn func(*T) error) (T, error) {
	for attempt := 0; ; attempt++ {
		v, rev, err := c.getRev(ctx, name)
		if err != nil {
			return v, err
		}
		if err := fn(&v); err != nil {
			return v, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return v, err
		}
		r, err := c.s.txn(ctx).If(clientv3.Compare(clientv3.ModRevision(c.key(name)), "=", rev)).
			Then(clientv3.OpPut(c.key(name), string(b))).Commit()
		if err != nil {
			return v, fmt.Errorf("updating %s %s: %w", c.kind, name, err)
		}
		if r.Succeeded {
			return v, nil
		}
		if attempt > 100 {
			return v, fmt.Errorf("updating %s %s: too much contention", c.kind, name)
		}
	}
}

// del removes an object: ErrNotFound if there was none.
func (c collection[T]) del(ctx context.Context, name string) error {
	r, err := c.s.txn(ctx).Then(clientv3.OpDelete(c.key(name))).Commit()
	if err != nil {
		return fmt.Errorf("deleting %s %s: %w", c.kind, name, err)
	}
	if r.Responses[0].GetResponseDeleteRange().Deleted == 0 {
		return fmt.Errorf("%s %s: %w", c.kind, name, ErrNotFound)
	}
	return nil
}

// The kinds kept as collections.
func (s *Store) nodes() collection[api.Node] {
	return collection[api.Node]{s: s, prefix: prefix + "nodes/", kind: "node"}
}

func (s *Store) images() collection[api.Manifest] {
	return collection[api.Manifest]{s: s, prefix: prefix + "images/", kind: "image"}
}

func (s *Store) profiles() collection[api.Profile] {
	return collection[api.Profile]{s: s, prefix: prefix + "profiles/", kind: "profile"}
}

func (s *Store) leases() collection[api.Lease] {
	return collection[api.Lease]{s: s, prefix: prefix + "leases/", kind: "lease"}
}

func (s *Store) vms() collection[api.VM] {
	return collection[api.VM]{s: s, prefix: prefix + "vms/", kind: "VM"}
}

func (s *Store) credentials() collection[api.Credential] {
	return collection[api.Credential]{s: s, prefix: prefix + "credentials/", kind: "credential"}
}

// PutCredential creates or replaces a BMC credential.
func (s *Store) PutCredential(ctx context.Context, c api.Credential) error {
	return s.credentials().put(ctx, c.Name, c)
}

// BMCCredential reads a BMC credential, password included: for the fabric's
// own use, never for the API.
func (s *Store) BMCCredential(ctx context.Context, name string) (api.Credential, error) {
	return s.credentials().get(ctx, name)
}

// Credentials lists the BMC credentials without their passwords.
func (s *Store) Credentials(ctx context.Context) ([]api.Credential, error) {
	all, err := s.credentials().all(ctx)
	for i := range all {
		all[i].Password = ""
	}
	return all, err
}

// DeleteCredential removes a BMC credential.
func (s *Store) DeleteCredential(ctx context.Context, name string) error {
	return s.credentials().del(ctx, name)
}
