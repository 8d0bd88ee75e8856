package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	return s.svcC.get(ctx, name)
}

// Services lists every service.
func (s *Store) Services(ctx context.Context) ([]api.Service, error) { return s.svcC.list(ctx, nil) }

// UpdateService changes a service with fn, compare-and-swap on its revision.
func (s *Store) UpdateService(ctx context.Context, name string, fn func(*api.Service) error) (api.Service, error) {
	return s.services().update(ctx, name, fn)
}

// DeleteService removes a service and its queues (its instances are the
// controller's to remove).
func (s *Store) DeleteService(ctx context.Context, name string) error {
	c := s.services()
	ops := append([]clientv3.Op{clientv3.OpDelete(c.key(name))}, deleteQueuesOps(name)...)
	r, err := s.txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(c.key(name)), ">", 0)).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("deleting service %s: %w", name, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("service %s: %w", name, ErrNotFound)
	}
	return nil
}
