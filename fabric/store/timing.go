package store

import (
	"context"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Observe has f told how long each request to etcd took, by kind ("get",
// "put", "delete", "txn", "compact", "do"): reads the watch-fed copies
// answer never reach etcd and are not counted. f must be quick and safe
// for concurrent use; nil stops the reports.
func (s *Store) Observe(f func(op string, took time.Duration)) {
	if f == nil {
		s.observe.Store(nil)
		return
	}
	s.observe.Store(&f)
}

// timedKV times every request of the KV it wraps for Observe.
type timedKV struct {
	clientv3.KV
	obs *atomic.Pointer[func(string, time.Duration)]
}

func (k timedKV) done(op string, start time.Time) {
	if f := k.obs.Load(); f != nil {
		(*f)(op, time.Since(start))
	}
}

func (k timedKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	defer k.done("put", time.Now())
	return k.KV.Put(ctx, key, val, opts...)
}

func (k timedKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	defer k.done("get", time.Now())
	return k.KV.Get(ctx, key, opts...)
}

func (k timedKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	defer k.done("delete", time.Now())
	return k.KV.Delete(ctx, key, opts...)
}

func (k timedKV) Compact(ctx context.Context, rev int64, opts ...clientv3.CompactOption) (*clientv3.CompactResponse, error) {
	defer k.done("compact", time.Now())
	return k.KV.Compact(ctx, rev, opts...)
}

func (k timedKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	defer k.done("do", time.Now())
	return k.KV.Do(ctx, op)
}

func (k timedKV) Txn(ctx context.Context) clientv3.Txn {
	return &timedTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type timedTxn struct {
	clientv3.Txn
	kv timedKV
}

func (t *timedTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *timedTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *timedTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *timedTxn) Commit() (*clientv3.TxnResponse, error) {
	defer t.kv.done("txn", time.Now())
	return t.Txn.Commit()
}
