package loomd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// TestEvents: a node's phase changes and an operator's action become
// events (who, from → to, why); --follow sees new ones as they happen;
// a burst past the retention bound is trimmed back to it; bad queries
// are refused.
func TestEvents(t *testing.T) {
	cfg := &Config{DataDir: t.TempDir(), API: freeAddr(t), EventKeep: 40}
	defer inProcess(t, cfg)()
	op, _ := operator(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ec := enroller(t, cfg, op)
	register := func(mac string) (string, *client.Client) {
		t.Helper()
		r, nc, err := ec.Enroll(ctx, api.Registration{MAC: mac, Inventory: api.Inventory{NICs: []api.NIC{{Name: "eth0", MAC: mac}}}})
		if err != nil {
			t.Fatal(err)
		}
		return r.NodeID, nc
	}
	id, nc := register("52:54:00:ee:00:01")

	var mu sync.Mutex
	var followed []api.Event
	fctx, stopFollow := context.WithCancel(ctx)
	followDone := make(chan error, 1)
	go func() {
		followDone <- op.FollowEvents(fctx, client.EventQuery{Object: id}, func(e api.Event) error {
			mu.Lock()
			defer mu.Unlock()
			followed = append(followed, e)
			return nil
		})
	}()
	if err := op.DeleteNode(ctx, "n-nosuch"); err == nil {
		t.Fatal("deleting a missing node worked")
	}
	if _, err := nc.Status(ctx, id, api.Status{}); err != nil {
		t.Fatal(err)
	}

	want := func(what string, match func(api.Event) bool) api.Event {
		t.Helper()
		for i := 0; i < 100; i++ {
			evs, err := op.Events(ctx, client.EventQuery{})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				if match(e) {
					return e
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		evs, _ := op.Events(ctx, client.EventQuery{})
		t.Fatalf("no event %s among %+v", what, evs)
		return api.Event{}
	}
	reg := want("of the node's registration", func(e api.Event) bool {
		return e.Kind == api.EventNode && e.Object == id && e.To == string(api.PhaseRegistered)
	})
	if reg.Actor != "agent" || reg.Time.IsZero() {
		t.Errorf("registration event %+v: want by the agent, with its time", reg)
	}
	act := want("of the failed delete", func(e api.Event) bool {
		return e.Kind == api.EventAction && e.Object == "n-nosuch"
	})
	if act.To != "404" || act.Actor != "operator" || !strings.Contains(act.Reason, "DELETE /v1/nodes/n-nosuch") {
		t.Errorf("action event %+v: want the operator's DELETE, 404", act)
	}

	// Deleting the node is an event the follower sees (after the
	// stored registration).
	if err := op.DeleteNode(ctx, id); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		mu.Lock()
		deleted := false
		for _, e := range followed {
			deleted = deleted || e.Kind == api.EventNode && e.To == "deleted"
		}
		var first api.Event
		if len(followed) > 0 {
			first = followed[0]
		}
		mu.Unlock()
		if deleted {
			if first.To != string(api.PhaseRegistered) {
				t.Errorf("followed first %+v: want the registration", first)
			}
			break
		}
		if i > 100 {
			t.Fatalf("following %s: got %+v, want its registration then its deletion", id, followed)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopFollow()
	if err := <-followDone; err != nil {
		t.Errorf("follow: %v", err)
	}

	// A burst past the bound: the history is trimmed back to it.
	var lastID string
	for i := range 60 {
		lastID, _ = register(fmt.Sprintf("52:54:00:ee:01:%02x", i))
	}
	want("of the burst's last node", func(e api.Event) bool { return e.Kind == api.EventNode && e.Object == lastID })
	for i := 0; ; i++ {
		evs, err := op.Events(ctx, client.EventQuery{Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) <= cfg.EventKeep {
			break
		}
		if i > 200 {
			t.Fatalf("%d events kept 20 s after the burst, want at most %d", len(evs), cfg.EventKeep)
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, q := range []string{"since=yesterday", "limit=0", "follow=maybe"} {
		_, err := op.OpenBlob(ctx, "/v1/events?"+q, nil)
		if !isStatus(err, 400) {
			t.Errorf("GET /v1/events?%s: %v, want 400", q, err)
		}
	}
}
