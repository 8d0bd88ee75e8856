package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// cached is a copy in memory of one kind of object (every key under a
// prefix), for the reads a fleet makes many times a second: a host's
// heartbeat, its goal, the controller's passes. The store keeps every
// copy current from one etcd watch over all of its keys (see follow), so
// each write anywhere moves the copies' revision. Reads are as consistent
// as etcd's own: each first learns the store's current revision (one
// linearizable read shared by the callers waiting at that moment) and
// waits until the copies have caught up with it. Writes still go to
// etcd; the copies learn of them from the watch.
type cached[T any] struct {
	s      *Store
	prefix string
	kind   string
	decode func([]byte) (T, error)
	clone  func(T) T // a reader's own copy (nil: a plain assignment, for values with no map, slice or pointer)
	// index, if set, files each object under a secondary key (a VM under
	// its node) for byIndex.
	index func(*T) string

	mu      sync.Mutex
	items   map[string]*entry[T]
	by      map[string]map[string]struct{}
	waiters map[string][]chan struct{}
}

// entry is one object as decoded (never changed in place: a change
// replaces the entry) with its modification revision.
type entry[T any] struct {
	v   T
	rev int64
	err error // the value could not be decoded
}

// follower is what the store's watch feeds: a cached kind.
type follower interface {
	keyPrefix() string
	reset(kvs []*mvccpb.KeyValue)
	apply(ev *clientv3.Event)
	wakeAll()
}

func newCached[T any](s *Store, prefix, kind string, decode func([]byte) (T, error), clone func(T) T, index func(*T) string) *cached[T] {
	if clone == nil {
		clone = func(v T) T { return v }
	}
	c := &cached[T]{s: s, prefix: prefix, kind: kind, decode: decode, clone: clone, index: index,
		items: map[string]*entry[T]{}, by: map[string]map[string]struct{}{}, waiters: map[string][]chan struct{}{}}
	s.followers = append(s.followers, c)
	return c
}

// follow keeps the cached kinds current until ctx ends: it lists them
// all at one revision, then applies the watch of every key under the
// store's prefix from there; a compacted or broken watch, or one that
// stops answering (see sync), lists again.
func (s *Store) follow(ctx context.Context, log *slog.Logger) {
	for ctx.Err() == nil {
		err := s.followOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		log.Warn("store cache: listing again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.stopped = errors.New("store closed")
	close(s.moved)
	for _, f := range s.followers {
		f.wakeAll()
	}
}

func (s *Store) followOnce(ctx context.Context) error {
	var gets []clientv3.Op
	for _, f := range s.followers {
		gets = append(gets, clientv3.OpGet(f.keyPrefix(), clientv3.WithPrefix()))
	}
	r, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return fmt.Errorf("listing: %w", err)
	}
	for i, f := range s.followers {
		f.reset(r.Responses[i].GetResponseRange().Kvs)
	}
	s.advance(r.Header.Revision)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1))
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case resp, ok = <-wch:
		case <-s.relist:
			return errors.New("the watch fell behind")
		}
		if !ok {
			return errors.New("watch closed")
		}
		if resp.CompactRevision != 0 {
			return fmt.Errorf("watch compacted at revision %d", resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return err
		}
		// Events come in revision order, so the copies have everything up
		// to the last one's revision; a progress notification vouches for
		// its header's. (Another response's header may run ahead of the
		// events it carries while a watch catches up.)
		rev := int64(0)
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			for _, f := range s.followers {
				if strings.HasPrefix(key, f.keyPrefix()) {
					f.apply(ev)
				}
			}
			rev = ev.Kv.ModRevision
		}
		if resp.IsProgressNotify() {
			rev = resp.Header.Revision
		}
		s.advance(rev)
	}
}

// advance records that the copies reflect revision rev.
func (s *Store) advance(rev int64) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if rev > s.rev {
		s.rev = rev
		close(s.moved)
		s.moved = make(chan struct{})
	}
}

// sync returns once the copies reflect every write that completed before
// it was called.
func (s *Store) sync(ctx context.Context) error {
	want, err := s.Revision(ctx)
	if err != nil {
		return err
	}
	start, still, last := time.Now(), time.Now(), int64(-1)
	for {
		s.fmu.Lock()
		rev, moved, stopped := s.rev, s.moved, s.stopped
		s.fmu.Unlock()
		if stopped != nil {
			return stopped
		}
		if rev >= want {
			return nil
		}
		if rev != last {
			still, last = time.Now(), rev
		}
		// Only a write outside the store's prefix (an etcd shared with
		// others) leaves the watch without an event to show for it: etcd
		// vouches for its revision on request, and a watch that still
		// does not get there is started again — one that stood still for
		// 2 s, not one busy catching up with a burst of writes (listing
		// everything again would only put it further behind).
		if time.Since(start) > 20*time.Millisecond {
			s.askProgress()
		}
		if time.Since(still) > 2*time.Second {
			select {
			case s.relist <- struct{}{}:
			default:
			}
			still = time.Now()
		}
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-moved:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

func (c *cached[T]) keyPrefix() string { return c.prefix }

func (c *cached[T]) entryOf(kv *mvccpb.KeyValue) *entry[T] {
	v, err := c.decode(kv.Value)
	if err != nil {
		err = fmt.Errorf("decoding %s %s: %w", c.kind, kv.Key[len(c.prefix):], err)
	}
	return &entry[T]{v: v, rev: kv.ModRevision, err: err}
}

func (c *cached[T]) reset(kvs []*mvccpb.KeyValue) {
	items := make(map[string]*entry[T], len(kvs))
	for _, kv := range kvs {
		items[string(kv.Key[len(c.prefix):])] = c.entryOf(kv)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items, c.by = items, map[string]map[string]struct{}{}
	if c.index != nil {
		for name, e := range items {
			c.file(name, e)
		}
	}
	c.wakeAllLocked()
}

// apply takes one event under the kind's prefix.
func (c *cached[T]) apply(ev *clientv3.Event) {
	var e *entry[T]
	if ev.Type == clientv3.EventTypePut {
		e = c.entryOf(ev.Kv)
	}
	name := string(ev.Kv.Key[len(c.prefix):])
	c.mu.Lock()
	defer c.mu.Unlock()
	old, had := c.items[name]
	if had && c.index != nil {
		c.unfile(name, old)
	}
	if ev.Type == clientv3.EventTypePut {
		c.items[name] = e
		if c.index != nil {
			c.file(name, e)
		}
	} else {
		delete(c.items, name)
	}
	for _, w := range c.waiters[name] {
		close(w)
	}
	delete(c.waiters, name)
}

func (c *cached[T]) file(name string, e *entry[T]) {
	if e.err != nil {
		return
	}
	k := c.index(&e.v)
	if c.by[k] == nil {
		c.by[k] = map[string]struct{}{}
	}
	c.by[k][name] = struct{}{}
}

func (c *cached[T]) unfile(name string, e *entry[T]) {
	if e.err != nil {
		return
	}
	k := c.index(&e.v)
	delete(c.by[k], name)
	if len(c.by[k]) == 0 {
		delete(c.by, k)
	}
}

func (c *cached[T]) wakeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wakeAllLocked()
}

func (c *cached[T]) wakeAllLocked() {
	for name, ws := range c.waiters {
		for _, w := range ws {
			close(w)
		}
		delete(c.waiters, name)
	}
}

type relaxedKey struct{}

// Relaxed marks ctx's reads of the cached kinds as content with the copy
// as it is, without waiting for the store's current revision: what a
// host's heartbeat and goal read, thousands a second. The copy only moves
// forward, so such a read never shows less than an earlier one did (what
// a host was told is there), and a missing object is looked for again
// after waiting. Writes stay compare-and-swap on revisions: a stale read
// costs a retry, never a lost update.
func Relaxed(ctx context.Context) context.Context { return context.WithValue(ctx, relaxedKey{}, true) }

// Strict undoes Relaxed.
func Strict(ctx context.Context) context.Context { return context.WithValue(ctx, relaxedKey{}, false) }

// IsRelaxed says whether ctx's reads are Relaxed.
func IsRelaxed(ctx context.Context) bool { r, _ := ctx.Value(relaxedKey{}).(bool); return r }

// ready waits, unless ctx is Relaxed, until the copies reflect every
// write completed before the call.
func (s *Store) ready(ctx context.Context) error {
	if IsRelaxed(ctx) {
		return nil
	}
	return s.sync(ctx)
}

// getRev reads one object and its modification revision.
func (c *cached[T]) getRev(ctx context.Context, name string) (T, int64, error) {
	var zero T
	if err := c.s.ready(ctx); err != nil {
		return zero, 0, err
	}
	e, ok := c.lookup(name)
	if !ok && IsRelaxed(ctx) {
		return c.getRev(Strict(ctx), name)
	}
	if !ok {
		return zero, 0, fmt.Errorf("%s %s: %w", c.kind, name, ErrNotFound)
	}
	if e.err != nil {
		return zero, 0, e.err
	}
	return c.clone(e.v), e.rev, nil
}

func (c *cached[T]) lookup(name string) (*entry[T], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[name]
	return e, ok
}

// peek is getRev without waiting for the store's revision (the caller
// has synced); ok is false if the object is absent or undecodable.
func (c *cached[T]) peek(name string) (T, int64, bool) {
	e, ok := c.lookup(name)
	if !ok || e.err != nil {
		var zero T
		return zero, 0, false
	}
	return c.clone(e.v), e.rev, true
}

// hasAll says whether every one of names is in the copy as it is.
func (c *cached[T]) hasAll(names []string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		if _, ok := c.items[n]; !ok {
			return false
		}
	}
	return true
}

func (c *cached[T]) get(ctx context.Context, name string) (T, error) {
	v, _, err := c.getRev(ctx, name)
	return v, err
}

// listRev lists the objects keep accepts (all if keep is nil; keep must
// not change what it is shown), in key order, with their revisions.
func (c *cached[T]) listRev(ctx context.Context, keep func(*T) bool) ([]T, []int64, error) {
	if err := c.s.ready(ctx); err != nil {
		return nil, nil, err
	}
	// Under the lock only what a copy costs least: the entries (never
	// changed in place) kept; sorting and copying happen after.
	c.mu.Lock()
	ns := make([]named[T], 0, len(c.items))
	for name, e := range c.items {
		if e.err != nil {
			c.mu.Unlock()
			return nil, nil, e.err
		}
		if keep == nil || keep(&e.v) {
			ns = append(ns, named[T]{name, e})
		}
	}
	c.mu.Unlock()
	out, revs := c.copies(ns)
	return out, revs, nil
}

func (c *cached[T]) list(ctx context.Context, keep func(*T) bool) ([]T, error) {
	out, _, err := c.listRev(ctx, keep)
	return out, err
}

// byIndex lists the objects filed under key, in key order.
func (c *cached[T]) byIndex(ctx context.Context, key string) ([]T, error) {
	if err := c.s.ready(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	ns := make([]named[T], 0, len(c.by[key]))
	for name := range c.by[key] {
		ns = append(ns, named[T]{name, c.items[name]})
	}
	c.mu.Unlock()
	out, _ := c.copies(ns)
	return out, nil
}

// named is an entry with its name, for a list.
type named[T any] struct {
	name string
	e    *entry[T]
}

// copies are what a reader gets, in key order: its own, made outside the
// lock (entries are never changed in place).
func (c *cached[T]) copies(ns []named[T]) ([]T, []int64) {
	slices.SortFunc(ns, func(a, b named[T]) int { return strings.Compare(a.name, b.name) })
	out := make([]T, len(ns))
	revs := make([]int64, len(ns))
	for i, n := range ns {
		out[i], revs[i] = c.clone(n.e.v), n.e.rev
	}
	return out, revs
}

// wait blocks until object name changes (or goes) after revision rev, or
// ctx ends.
func (c *cached[T]) wait(ctx context.Context, name string, rev int64) error {
	for {
		c.s.fmu.Lock()
		have, moved := c.s.rev, c.s.moved
		c.s.fmu.Unlock()
		c.mu.Lock()
		e, ok := c.items[name]
		if (ok && e.rev > rev) || (!ok && have > rev) {
			c.mu.Unlock()
			return nil
		}
		w := make(chan struct{})
		c.waiters[name] = append(c.waiters[name], w)
		if ok {
			moved = nil // only a change to name can end this wait
		}
		c.mu.Unlock()
		select {
		case <-w:
		case <-moved:
			c.drop(name, w)
		case <-c.s.wctx.Done():
			c.drop(name, w)
			return errors.New("store closed")
		case <-ctx.Done():
			c.drop(name, w)
			return ctx.Err()
		}
	}
}

func (c *cached[T]) drop(name string, w chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.waiters[name]
	if i := slices.Index(ws, w); i >= 0 {
		ws = slices.Delete(ws, i, i+1)
	}
	if len(ws) == 0 {
		delete(c.waiters, name)
	} else {
		c.waiters[name] = ws
	}
}

// Revision is the store's current revision (it moves with every write),
// read linearizably. Callers
// arriving while a read is under way share the next one (not that one:
// it may have begun before their writes completed).
func (s *Store) Revision(ctx context.Context) (int64, error) {
	s.rmu.Lock()
	if s.rnext == nil {
		s.rnext = &revRead{done: make(chan struct{})}
		if !s.rbusy {
			s.rbusy = true
			go s.readRevisions()
		}
	}
	r := s.rnext
	s.rmu.Unlock()
	select {
	case <-r.done:
		return r.rev, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

type revRead struct {
	done chan struct{}
	rev  int64
	err  error
}

// readRevisions serves the queued revision reads one after another.
func (s *Store) readRevisions() {
	for {
		s.rmu.Lock()
		r := s.rnext
		if r == nil {
			s.rbusy = false
			s.rmu.Unlock()
			return
		}
		s.rnext = nil
		s.rmu.Unlock()
		ctx, cancel := context.WithTimeout(s.wctx, 10*time.Second)
		resp, err := s.cli.Get(ctx, prefix+"revision", clientv3.WithCountOnly())
		cancel()
		if err != nil {
			r.err = fmt.Errorf("reading the store's revision: %w", err)
		} else {
			r.rev = resp.Header.Revision
		}
		close(r.done)
	}
}

// askProgress asks etcd to tell every watch how far it has got (at most
// every 2 ms: a cache waiting on it asks again).
func (s *Store) askProgress() {
	s.rmu.Lock()
	if time.Since(s.asked) < 2*time.Millisecond {
		s.rmu.Unlock()
		return
	}
	s.asked = time.Now()
	s.rmu.Unlock()
	_ = s.cli.RequestProgress(s.wctx) // a lost request is asked again by the waiter
}
