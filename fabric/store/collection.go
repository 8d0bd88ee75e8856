package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/loomfabric/loom/fabric/api"
)

// collection is one kind of object kept as JSON under a key prefix, by
// name.
type collection[T any] struct {
	s      *Store
	prefix string // e.g. prefix + "credentials/"
	kind   string // e.g. "credential", for errors
}

func (c collection[T]) put(ctx context.Context, name string, v T) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := c.s.cli.Put(ctx, c.prefix+name, string(b)); err != nil {
		return fmt.Errorf("storing %s %s: %w", c.kind, name, err)
	}
	return nil
}

func (c collection[T]) get(ctx context.Context, name string) (T, error) {
	b, _, err := c.s.get(ctx, c.prefix+name)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("%s %s: %w", c.kind, name, err)
	}
	return decode[T](b)
}

func (c collection[T]) all(ctx context.Context) ([]T, error) {
	vals, err := c.s.list(ctx, c.prefix)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(vals))
	for _, v := range vals {
		x, err := decode[T](v)
		if err != nil {
			return nil, fmt.Errorf("decoding %s: %w", c.kind, err)
		}
		out = append(out, x)
	}
	return out, nil
}

func (c collection[T]) del(ctx context.Context, name string) error {
	r, err := c.s.cli.Delete(ctx, c.prefix+name)
	if err != nil {
		return fmt.Errorf("deleting %s %s: %w", c.kind, name, err)
	}
	if r.Deleted == 0 {
		return fmt.Errorf("%s %s: %w", c.kind, name, ErrNotFound)
	}
	return nil
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
