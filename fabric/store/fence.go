package store

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrNotLeader is returned by a write of a replica that does not lead the
// cluster (or no longer does): the leader's writes are fenced on its
// leader key (see Lead), and a replica that follows makes none but those
// its context allows (AnyReplica).
var ErrNotLeader = errors.New("this replica is not the leader")

// fence is the condition every fenced write carries.
type fence struct {
	cmp   clientv3.Cmp
	never bool // a follower: refused without asking etcd
}

// Fencing: with no fence set (a store nobody campaigns on, such as a unit
// test's), writes are plain. Lead sets one for the store's life.
func (s *Store) setFence(f *fence) { s.fence.Store(f) }

// Leading says whether this store's writes are the leader's now (also
// true for a store nobody campaigns on).
func (s *Store) Leading() bool {
	f := s.fence.Load()
	return f == nil || !f.never
}

type anyReplicaKey struct{}

// AnyReplica marks ctx's writes as safe from any replica, leader or not:
// guarded by their own comparisons so that a stale replica's attempt
// fails or changes nothing another could have written (a DHCP lease, a
// Discovered node claiming its MAC, a shared secret created once).
func AnyReplica(ctx context.Context) context.Context {
	return context.WithValue(ctx, anyReplicaKey{}, true)
}

func anyReplica(ctx context.Context) bool {
	b, _ := ctx.Value(anyReplicaKey{}).(bool)
	return b
}

// txn is a transaction fenced on the leader key while the store has a
// fence: the caller's If/Then/Else run nested inside "the leader key is
// still ours", so a deposed leader's write fails whole (ErrNotLeader)
// however late it reaches etcd.
func (s *Store) txn(ctx context.Context) clientv3.Txn {
	return &fencedTxn{s: s, ctx: ctx}
}

type fencedTxn struct {
	s         *Store
	ctx       context.Context
	cmps      []clientv3.Cmp
	then, els []clientv3.Op
}

func (t *fencedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cmps = append(t.cmps, cs...)
	return t
}

func (t *fencedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.then = append(t.then, ops...)
	return t
}

func (t *fencedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.els = append(t.els, ops...)
	return t
}

func (t *fencedTxn) Commit() (*clientv3.TxnResponse, error) {
	f := t.s.fence.Load()
	if f == nil || anyReplica(t.ctx) {
		return t.s.cli.Txn(t.ctx).If(t.cmps...).Then(t.then...).Else(t.els...).Commit()
	}
	if f.never {
		return nil, ErrNotLeader
	}
	if len(t.cmps) == 0 && len(t.els) == 0 {
		r, err := t.s.cli.Txn(t.ctx).If(f.cmp).Then(t.then...).Commit()
		if err == nil && !r.Succeeded {
			return nil, ErrNotLeader
		}
		return r, err
	}
	r, err := t.s.cli.Txn(t.ctx).If(f.cmp).Then(clientv3.OpTxn(t.cmps, t.then, t.els)).Commit()
	if err != nil {
		return nil, err
	}
	if !r.Succeeded {
		return nil, ErrNotLeader
	}
	inner := (*clientv3.TxnResponse)(r.Responses[0].GetResponseTxn())
	inner.Header = r.Header
	return inner, nil
}

// Unavailable says whether err is the store being unable to answer for
// now (ErrNotLeader, or etcd without a leader, changing leader, or timing
// out a request while its members catch up): a client may retry, here or
// on another replica.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotLeader) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	if s, ok := status.FromError(err); ok {
		return s.Code() == codes.Unavailable
	}
	return false
}
