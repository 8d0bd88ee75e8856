package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// ErrForbidden marks a queue call from a VM that may not make it (not an
// instance, or not on the calling node).
var ErrForbidden = errors.New("forbidden")

// QueueStore is what the queues need of the store; *store.Store has it.
type QueueStore interface {
	VM(ctx context.Context, id string) (api.VM, error)
	Service(ctx context.Context, name string) (api.Service, error)
	QueuePut(ctx context.Context, svc, queue string, body []byte, now time.Time) (string, error)
	QueueGet(ctx context.Context, svc, queue string, visibility time.Duration, now time.Time) (*api.QueueMessage, error)
	QueueDelete(ctx context.Context, svc, queue, id, receipt string) error
	QueuePeek(ctx context.Context, svc, queue string, max int, now time.Time) ([]api.QueueMessage, int, error)
	Queues(ctx context.Context, svc string, now time.Time) ([]api.QueueInfo, error)
}

// Queues serves the services' queues. A call comes from a host (node,
// authenticated by its credential) on behalf of one of its guests (vm):
// the VM must be on that node and an instance of a service, and it reaches
// that service's queues only.
type Queues struct {
	st  QueueStore
	now func() time.Time
}

// NewQueues returns the queues over st.
func NewQueues(st QueueStore) *Queues { return &Queues{st: st, now: time.Now} }

// Do carries out one queue request of guest vm on node.
func (q *Queues) Do(ctx context.Context, node, vm string, req api.QueueRequest) (api.QueueReply, error) {
	v, err := q.st.VM(ctx, vm)
	if store.IsNotFound(err) {
		return api.QueueReply{}, fmt.Errorf("%w: VM %s does not exist", ErrForbidden, vm)
	}
	if err != nil {
		return api.QueueReply{}, err
	}
	switch {
	case v.Node != node:
		return api.QueueReply{}, fmt.Errorf("%w: VM %s is not on node %s", ErrForbidden, vm, node)
	case v.Service == "":
		return api.QueueReply{}, fmt.Errorf("%w: VM %s is not an instance of a service: it has no queues", ErrForbidden, vm)
	case v.Desired == api.VMDeleted:
		return api.QueueReply{}, fmt.Errorf("%w: instance %s is being deleted", ErrForbidden, vm)
	}
	if err := req.Validate(); err != nil {
		return api.QueueReply{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	now := q.now()
	switch req.Op {
	case api.QueuePut:
		id, err := q.st.QueuePut(ctx, v.Service, req.Queue, req.Body, now)
		return api.QueueReply{ID: id}, err
	case api.QueueGet:
		m, err := q.st.QueueGet(ctx, v.Service, req.Queue, time.Duration(req.Visibility), now)
		return api.QueueReply{Message: m}, err
	case api.QueuePeek:
		ms, n, err := q.st.QueuePeek(ctx, v.Service, req.Queue, req.Max, now)
		return api.QueueReply{Messages: ms, Length: n}, err
	default:
		return api.QueueReply{}, q.st.QueueDelete(ctx, v.Service, req.Queue, req.ID, req.Receipt)
	}
}

// List describes the queues of a service (operators).
func (q *Queues) List(ctx context.Context, svc string) ([]api.QueueInfo, error) {
	if _, err := q.st.Service(ctx, svc); err != nil {
		return nil, err
	}
	return q.st.Queues(ctx, svc, q.now())
}
