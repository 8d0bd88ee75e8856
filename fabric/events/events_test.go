package events

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

func js(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDiff(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := now.Add(-time.Second)
	reg := api.Node{ID: "n-1", MAC: "52:54:00:00:00:01", Phase: api.PhaseRegistered}
	failed := reg
	failed.SetPhase(api.PhaseFailed, at, "sha256 mismatch")
	heartbeat := reg
	heartbeat.IP = "10.0.0.9"
	vm := api.VM{ID: "vm-1", Node: "n-2"}
	running := vm
	running.State = api.VMStateRunning
	crashed := running
	crashed.State, crashed.Reason = api.VMStateCrashed, "QEMU exited 1"
	rec := api.AuditRecord{Time: at, Who: "alice", Method: "POST", Path: "/v1/nodes/n-1/reprovision", Status: 409, Error: "busy"}
	for _, tc := range []struct {
		name string
		c    store.Change
		want []api.Event
	}{
		{"new node", store.Change{Kind: api.EventNode, Name: "n-1", Cur: js(t, reg)},
			[]api.Event{{Time: now, Kind: api.EventNode, Object: "n-1", To: "Registered", Actor: "agent", Reason: "new node 52:54:00:00:00:01"}}},
		{"failed", store.Change{Kind: api.EventNode, Name: "n-1", Prev: js(t, reg), Cur: js(t, failed)},
			[]api.Event{{Time: at, Kind: api.EventNode, Object: "n-1", From: "Registered", To: "Failed", Actor: "agent", Reason: "sha256 mismatch"}}},
		{"same phase", store.Change{Kind: api.EventNode, Name: "n-1", Prev: js(t, reg), Cur: js(t, heartbeat)}, nil},
		{"node deleted", store.Change{Kind: api.EventNode, Name: "n-1", Prev: js(t, reg)},
			[]api.Event{{Time: now, Kind: api.EventNode, Object: "n-1", From: "Registered", To: "deleted", Actor: "operator", Reason: "deleted"}}},
		{"VM placed", store.Change{Kind: api.EventVM, Name: "vm-1", Cur: js(t, vm)},
			[]api.Event{{Time: now, Kind: api.EventVM, Object: "vm-1", To: "Pending", Actor: "fabric", Reason: "placed on n-2"}}},
		{"VM crashed", store.Change{Kind: api.EventVM, Name: "vm-1", Prev: js(t, running), Cur: js(t, crashed)},
			[]api.Event{{Time: now, Kind: api.EventVM, Object: "vm-1", From: "Running", To: "Crashed", Actor: "host n-2", Reason: "QEMU exited 1"}}},
		{"action", store.Change{Kind: api.EventAction, Name: "x", Cur: js(t, rec)},
			[]api.Event{{Time: at, Kind: api.EventAction, Object: "n-1", To: "409", Actor: "alice", Reason: "POST /v1/nodes/n-1/reprovision: busy"}}},
		{"audit trimmed", store.Change{Kind: api.EventAction, Name: "x", Prev: js(t, rec)}, nil},
		{"garbage", store.Change{Kind: api.EventNode, Name: "n-1", Cur: []byte("{not json")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Diff(tc.c, now)); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
		})
	}
}

// fakeStore is a history in memory: changes from a revision on, or
// ErrCompacted when the cursor is below compactedBelow.
type fakeStore struct {
	cursor, head   int64
	compactedBelow int64
	changes        []store.Change
	recorded       []recordCall
	done           chan struct{}
}

type recordCall struct {
	evs  []api.Event
	upTo int64
}

func (f *fakeStore) EventCursor(context.Context) (int64, int64, error) { return f.cursor, f.head, nil }

func (f *fakeStore) FollowChanges(ctx context.Context, from int64, fn func([]store.Change) error) error {
	if from < f.compactedBelow {
		return store.ErrCompacted
	}
	var cs []store.Change
	for _, c := range f.changes {
		if c.Rev > from {
			cs = append(cs, c)
		}
	}
	if len(cs) > 0 {
		if err := fn(cs); err != nil {
			return err
		}
	}
	close(f.done)
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeStore) RecordEvents(_ context.Context, evs []api.Event, upTo int64, _ time.Time) error {
	f.recorded = append(f.recorded, recordCall{evs, upTo})
	f.cursor = upTo
	return nil
}

func runRecorder(t *testing.T, f *fakeStore) {
	t.Helper()
	f.done = make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	ended := make(chan error)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	go func() { ended <- (&Recorder{Store: f, Now: func() time.Time { return now }}).Run(ctx) }()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the recorder never followed the changes")
	}
	cancel()
	if err := <-ended; err != nil {
		t.Fatal(err)
	}
}

// A history compacted past the cursor is one gap event, and the recorder
// goes on from the present.
func TestRecorderGap(t *testing.T) {
	f := &fakeStore{cursor: 10, head: 500, compactedBelow: 100}
	runRecorder(t, f)
	if len(f.recorded) != 1 {
		t.Fatalf("recorded %d times, want one gap: %+v", len(f.recorded), f.recorded)
	}
	r := f.recorded[0]
	if r.upTo != 500 || len(r.evs) != 1 || r.evs[0].Kind != api.EventGap || !strings.Contains(r.evs[0].Reason, "revision 10") {
		t.Errorf("gap recorded as %+v up to %d; want one gap event naming revision 10, cursor at 500", r.evs, r.upTo)
	}
}

// A revision with more events than a transaction holds is recorded in
// parts, the cursor reaching that revision only with the last part; the
// revisions around it are recorded whole.
func TestRecorderSplitsABigRevision(t *testing.T) {
	f := &fakeStore{cursor: 1, head: 1}
	node := func(i int) store.Change {
		return store.Change{Kind: api.EventNode, Name: fmt.Sprint("n-", i), Cur: js(t, api.Node{ID: fmt.Sprint("n-", i), Phase: api.PhaseEnrolled})}
	}
	f.changes = append(f.changes, node(0)) // revision 2
	f.changes[0].Rev = 2
	big := store.MaxTxnOps + 10
	for i := range big { // revision 3: one transaction's worth and more
		c := node(1 + i)
		c.Rev = 3
		f.changes = append(f.changes, c)
	}
	last := node(big + 1)
	last.Rev = 4
	f.changes = append(f.changes, last)
	runRecorder(t, f)

	total := 0
	for i, r := range f.recorded {
		if len(r.evs) >= store.MaxTxnOps {
			t.Errorf("record %d holds %d events: more than a transaction (%d) with its cursor", i, len(r.evs), store.MaxTxnOps)
		}
		total += len(r.evs)
		if i > 0 && r.upTo < f.recorded[i-1].upTo {
			t.Errorf("cursor went back: %d after %d", r.upTo, f.recorded[i-1].upTo)
		}
	}
	if total != big+2 {
		t.Errorf("recorded %d events, want %d (one per change)", total, big+2)
	}
	// Revision 3's first part (with n-1) leaves the cursor below 3; its
	// last part (with its last node) moves it to 3.
	for _, r := range f.recorded {
		for _, e := range r.evs {
			if e.Object == "n-1" && r.upTo >= 3 {
				t.Errorf("revision 3's first part moved the cursor to %d", r.upTo)
			}
			if e.Object == fmt.Sprint("n-", big) && r.upTo != 3 {
				t.Errorf("revision 3's last part recorded with the cursor at %d, want 3", r.upTo)
			}
		}
	}
	if f.cursor != 4 {
		t.Errorf("cursor at %d after all, want 4", f.cursor)
	}
}
