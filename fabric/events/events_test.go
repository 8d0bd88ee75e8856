package events

import (
	"encoding/json"
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
