package store

import (
	"context"

	"github.com/loomfabric/loom/fabric/api"
)

func (s *Store) services() collection[api.Service] {
	return collection[api.Service]{s: s, prefix: prefix + "services/", kind: "service"}
}

// CreateService stores a new service; ErrExists if the name is taken.
func (s *Store) CreateService(ctx context.Context, svc api.Service) error {
	return s.services().create(ctx, svc.Name, svc)
}

// Service reads one service.
func (s *Store) Service(ctx context.Context, name string) (api.Service, error) {
	return s.services().get(ctx, name)
}

// Services lists every service.
func (s *Store) Services(ctx context.Context) ([]api.Service, error) { return s.services().all(ctx) }

// UpdateService changes a service with fn, compare-and-swap on its revision.
func (s *Store) UpdateService(ctx context.Context, name string, fn func(*api.Service) error) (api.Service, error) {
	return s.services().update(ctx, name, fn)
}

// DeleteService removes a service (its instances are the controller's to
// remove).
func (s *Store) DeleteService(ctx context.Context, name string) error {
	return s.services().del(ctx, name)
}
