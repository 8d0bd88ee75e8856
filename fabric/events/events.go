// Package events keeps the fabric's history: every change of a node's
// phase or a VM's state, every node or VM made or removed, and every
// operator write (its audit record) becomes an api.Event in the store.
//
// The leader's Recorder follows the store's changes (an etcd watch with
// the values before and after) rather than every writer reporting its
// own: nothing that changes a node or VM can forget to, and each event
// is the change as stored. It records a revision's events and moves its
// cursor in one fenced transaction, so a new leader goes on where the
// last one stopped, and nothing is recorded twice. A history compacted
// past the cursor (a leader away longer than etcd keeps its history) is
// recorded as a "gap" event and followed from the present.
//
// Retention is by count and by age (Trim, run by the leader).
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// Store is what the recorder needs (*store.Store has it).
type Store interface {
	EventCursor(ctx context.Context) (cursor, now int64, err error)
	FollowChanges(ctx context.Context, from int64, fn func(cs []store.Change) error) error
	RecordEvents(ctx context.Context, evs []api.Event, upTo int64, now time.Time) error
}

// Recorder turns the store's changes into events.
type Recorder struct {
	Store Store
	Now   func() time.Time
	Log   *slog.Logger
}

// Run records events until ctx ends (the leader's term).
func (r *Recorder) Run(ctx context.Context) error {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for ctx.Err() == nil {
		cursor, head, err := r.Store.EventCursor(ctx)
		if err == nil && cursor == 0 {
			cursor = head // a new history starts now
			err = r.Store.RecordEvents(ctx, nil, cursor, now())
		}
		if err == nil {
			err = r.Store.FollowChanges(ctx, cursor, func(cs []store.Change) error { return r.record(ctx, cs, now) })
		}
		if errors.Is(err, store.ErrCompacted) {
			log.Warn("events: the store's history was compacted past the last event recorded: some are lost", "cursor", cursor)
			if _, head, err = r.Store.EventCursor(ctx); err == nil { // go on from the present
				err = r.Store.RecordEvents(ctx, []api.Event{{Time: now(), Kind: api.EventGap, Actor: "fabric",
					Reason: fmt.Sprintf("changes after store revision %d were compacted before they were recorded", cursor)}}, head, now())
			}
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("events: following the store", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// record stores the events of cs (changes in revision order) with the
// cursor, whole revisions to a transaction: a crash between two leaves
// the cursor at the last revision recorded.
func (r *Recorder) record(ctx context.Context, cs []store.Change, now func() time.Time) error {
	var evs []api.Event
	for i, c := range cs {
		evs = append(evs, Diff(c, now())...)
		last := i == len(cs)-1
		if !last && cs[i+1].Rev == c.Rev {
			continue // the rest of this revision first
		}
		next := 0
		if !last {
			next = len(Diff(cs[i+1], now())) // at most one event a change
		}
		if last || len(evs)+next >= store.MaxTxnOps {
			// One revision's events alone may not fit (a transaction
			// of MaxTxnOps node writes): split them, the cursor
			// moving only with the last part.
			for len(evs) >= store.MaxTxnOps {
				if err := r.Store.RecordEvents(ctx, evs[:store.MaxTxnOps-1], c.Rev-1, now()); err != nil {
					return err
				}
				evs = evs[store.MaxTxnOps-1:]
			}
			if err := r.Store.RecordEvents(ctx, evs, c.Rev, now()); err != nil {
				return err
			}
			evs = nil
		}
	}
	return nil
}

// Diff is the events of one change, at now unless the change says when.
// A value that does not decode makes no event.
func Diff(c store.Change, now time.Time) []api.Event {
	switch c.Kind {
	case api.EventNode:
		return nodeEvents(c, now)
	case api.EventVM:
		return vmEvents(c, now)
	case api.EventAction:
		return actionEvents(c, now)
	}
	return nil
}

func decode[T any](b []byte) (*T, bool) {
	if b == nil {
		return nil, true
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, false
	}
	return &v, true
}

func nodeEvents(c store.Change, now time.Time) []api.Event {
	prev, ok1 := decode[api.Node](c.Prev)
	cur, ok2 := decode[api.Node](c.Cur)
	if !ok1 || !ok2 {
		return nil
	}
	e := api.Event{Time: now, Kind: api.EventNode, Object: c.Name}
	switch {
	case cur == nil && prev != nil:
		e.From, e.To, e.Actor, e.Reason = string(prev.Phase), "deleted", "operator", "deleted"
	case cur == nil:
		return nil
	case prev == nil || prev.Phase != cur.Phase:
		if prev != nil {
			e.From = string(prev.Phase)
		}
		e.To = string(cur.Phase)
		e.Actor = phaseActor(cur.Phase)
		if !cur.PhaseChanged.IsZero() {
			e.Time = cur.PhaseChanged
		}
		if h := cur.History; len(h) > 0 && h[len(h)-1].To == cur.Phase {
			e.Reason = h[len(h)-1].Reason
		}
		if e.Reason == "" && cur.Phase == api.PhaseFailed {
			e.Reason = cur.Reason
		}
		if prev == nil && e.Reason == "" {
			e.Reason = "new node " + cur.MAC
		}
	default:
		return nil
	}
	return []api.Event{e}
}

// phaseActor says who moves a node into phase p.
func phaseActor(p api.Phase) string {
	switch p {
	case api.PhaseDiscovered:
		return "dhcp"
	case api.PhaseUnreachable:
		return "fabric"
	case api.PhaseEnrolled:
		return "operator"
	}
	return "agent"
}

func vmEvents(c store.Change, now time.Time) []api.Event {
	prev, ok1 := decode[api.VM](c.Prev)
	cur, ok2 := decode[api.VM](c.Cur)
	if !ok1 || !ok2 {
		return nil
	}
	state := func(v *api.VM) string {
		if v.State == "" {
			return string(api.VMStatePending)
		}
		return string(v.State)
	}
	e := api.Event{Time: now, Kind: api.EventVM, Object: c.Name}
	switch {
	case cur == nil && prev != nil:
		e.From, e.To, e.Actor, e.Reason = state(prev), "deleted", "fabric", "deleted from "+prev.Node
	case cur == nil:
		return nil
	case prev == nil:
		e.To, e.Actor, e.Reason = state(cur), "fabric", "placed on "+cur.Node
	case state(prev) != state(cur):
		e.From, e.To, e.Reason = state(prev), state(cur), cur.Reason
		e.Actor = "host " + cur.Node
		if cur.State == "" || cur.State == api.VMStatePending {
			e.Actor = "fabric"
		}
	case prev.Node != cur.Node:
		e.From, e.To, e.Actor, e.Reason = state(prev), state(cur), "fabric", "moved from "+prev.Node+" to "+cur.Node
	default:
		return nil
	}
	return []api.Event{e}
}

// objectIn finds what an API path names: /v1/<kind>/<object>[/…].
var objectIn = regexp.MustCompile(`^/v1/[a-z]+/([^/?]+)`)

func actionEvents(c store.Change, now time.Time) []api.Event {
	if c.Cur == nil || c.Prev != nil { // a record trimmed, or rewritten: nothing happened
		return nil
	}
	rec, ok := decode[api.AuditRecord](c.Cur)
	if !ok || rec == nil {
		return nil
	}
	e := api.Event{Time: rec.Time, Kind: api.EventAction, To: strconv.Itoa(rec.Status), Actor: rec.Who, Reason: rec.Method + " " + rec.Path}
	if e.Time.IsZero() {
		e.Time = now
	}
	if m := objectIn.FindStringSubmatch(rec.Path); m != nil {
		e.Object = m[1]
	}
	if rec.Error != "" {
		e.Reason += ": " + rec.Error
	}
	return []api.Event{e}
}
