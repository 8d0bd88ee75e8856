package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

// The event history (package events writes it):
//
//	/loom/v1/events/<ns>-<rev>-<i>  api.Event; ns the time it was recorded
//	                                (20 digits), rev the store revision of
//	                                the change (16), i its place in it (4)
//	/loom/v1/events-cursor          the last store revision turned into events

const (
	eventPrefix = prefix + "events/"
	eventCursor = prefix + "events-cursor"
)

// ErrCompacted means changes to follow were compacted away.
var ErrCompacted = errors.New("the store's history was compacted past the changes asked for")

// Change is one write to an object the event history follows.
type Change struct {
	Rev  int64  // the store revision that made it
	Kind string // api.EventNode, api.EventVM or api.EventAction (an audit record)
	Name string
	// Prev and Cur are the stored values before and after (nil: none).
	Prev, Cur []byte
}

// followedKinds maps key prefixes to the kinds of change they make.
var followedKinds = []struct{ prefix, kind string }{
	{prefix + "nodes/", api.EventNode},
	{prefix + "vms/", api.EventVM},
	{auditPrefix, api.EventAction},
}

// EventCursor is the last store revision recorded as events (0: none yet),
// and the store's revision now.
func (s *Store) EventCursor(ctx context.Context) (cursor, now int64, err error) {
	r, err := s.cli.Get(ctx, eventCursor)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the event cursor: %w", err)
	}
	if len(r.Kvs) > 0 {
		cursor, err = strconv.ParseInt(string(r.Kvs[0].Value), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("event cursor %q: %w", r.Kvs[0].Value, err)
		}
	}
	return cursor, r.Header.Revision, nil
}

// FollowChanges calls fn with the changes to nodes, VMs and audit records
// after store revision from, in order, a watch response at a time (each
// Change with its revision), until ctx ends or fn fails. ErrCompacted if
// from is too old.
func (s *Store) FollowChanges(ctx context.Context, from int64, fn func(cs []Change) error) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wc := s.cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(from+1))
	for wr := range wc {
		if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
			return fmt.Errorf("following from revision %d: %w", from+1, ErrCompacted)
		}
		if err := wr.Err(); err != nil {
			return fmt.Errorf("following the store: %w", err)
		}
		var cs []Change
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			for _, f := range followedKinds {
				name, ok := strings.CutPrefix(key, f.prefix)
				if !ok {
					continue
				}
				c := Change{Rev: ev.Kv.ModRevision, Kind: f.kind, Name: name}
				if ev.PrevKv != nil {
					c.Prev = ev.PrevKv.Value
				}
				if ev.Type == clientv3.EventTypePut {
					c.Cur = ev.Kv.Value
				}
				cs = append(cs, c)
			}
		}
		if len(cs) > 0 {
			if err := fn(cs); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("following the store: the watch closed")
}

// RecordEvents stores evs, the events of the changes up to store revision
// upTo, and moves the cursor there, in one fenced transaction (the
// leader's): a deposed leader records nothing, and no change is recorded
// twice. evs must fit one transaction with the cursor.
func (s *Store) RecordEvents(ctx context.Context, evs []api.Event, upTo int64, now time.Time) error {
	if len(evs)+1 > MaxTxnOps {
		return fmt.Errorf("recording %d events: more than a transaction holds", len(evs))
	}
	ops := make([]clientv3.Op, 0, len(evs)+1)
	for i, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%020d-%016d-%04d", eventPrefix, now.UnixNano(), upTo, i), string(b)))
	}
	ops = append(ops, clientv3.OpPut(eventCursor, strconv.FormatInt(upTo, 10)))
	if _, err := s.txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("recording %d events: %w", len(evs), err)
	}
	return nil
}

// EventFilter picks events.
type EventFilter struct {
	Object string    // "" for all
	Since  time.Time // recorded at or after
	// Limit keeps the newest Limit of those picked (0: all).
	Limit int
}

// Match says whether e passes the object filter.
func (f EventFilter) Match(e api.Event) bool { return f.Object == "" || e.Object == f.Object }

// Events lists the events f picks, oldest first, and the store revision
// they were read at (to follow from).
func (s *Store) Events(ctx context.Context, f EventFilter) ([]api.Event, int64, error) {
	from := eventPrefix
	if !f.Since.IsZero() {
		from = fmt.Sprintf("%s%020d", eventPrefix, f.Since.UnixNano())
	}
	r, err := s.cli.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(eventPrefix)))
	if err != nil {
		return nil, 0, fmt.Errorf("reading events: %w", err)
	}
	var out []api.Event
	for _, kv := range r.Kvs {
		var e api.Event
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, 0, fmt.Errorf("decoding event %s: %w", kv.Key, err)
		}
		if f.Match(e) {
			out = append(out, e)
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, r.Header.Revision, nil
}

// WatchEvents calls fn with each event f matches recorded after store
// revision rev, until ctx ends or fn fails.
func (s *Store) WatchEvents(ctx context.Context, rev int64, f EventFilter, fn func(api.Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range s.cli.Watch(ctx, eventPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete()) {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("following events: %w", err)
		}
		for _, ev := range wr.Events {
			var e api.Event
			if err := json.Unmarshal(ev.Kv.Value, &e); err != nil {
				return fmt.Errorf("decoding event %s: %w", ev.Kv.Key, err)
			}
			if f.Match(e) {
				if err := fn(e); err != nil {
					return err
				}
			}
		}
	}
	return ctx.Err()
}

// TrimEvents keeps at most keep events, none older than maxAge: the
// oldest go first. It says how many it removed.
func (s *Store) TrimEvents(ctx context.Context, keep int, maxAge time.Duration, now time.Time) (int, error) {
	return s.trimLog(ctx, eventPrefix, "the event history", keep, maxAge, now)
}
