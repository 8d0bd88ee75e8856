package service

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

func TestMeterLooks(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var stored [][]api.UsageRecord
	fail := false
	m := &Meter{Fresh: 30 * time.Second, now: func() time.Time { return t0.Add(time.Minute) },
		Append: func(_ context.Context, recs []api.UsageRecord) error {
			if fail {
				return errors.New("store down")
			}
			stored = append(stored, recs)
			return nil
		}}
	vm := func(id string, state api.VMState, bytes uint64, observed time.Time) api.VM {
		return api.VM{ID: id, Service: "gb", Role: "web", VCPUs: 1, MemoryMB: 256, Desired: api.VMRunning,
			VMStatus: api.VMStatus{State: state, Observed: observed, Usage: &api.Usage{ChannelBytes: bytes}}}
	}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	// a runs 0→20 s; b starts at 10 s, its guest restarts (counter back
	// to 50) at 20 s; c is Running in the store but its host fell silent.
	m.look([]api.VM{vm("a", api.VMStateRunning, 100, at(0)), {ID: "hand", VCPUs: 1}}, at(0))
	m.look([]api.VM{vm("a", api.VMStateRunning, 300, at(10)), vm("b", api.VMStateStarting, 0, at(10)), vm("c", api.VMStateRunning, 0, at(-60))}, at(10))
	m.look([]api.VM{vm("a", api.VMStateRunning, 400, at(20)), vm("b", api.VMStateRunning, 1000, at(20)), vm("c", api.VMStateRunning, 0, at(-60))}, at(20))
	m.look([]api.VM{vm("a", api.VMStateStopped, 400, at(30)), vm("b", api.VMStateRunning, 50, at(30)), vm("c", api.VMStateRunning, 0, at(-60))}, at(30))
	fail = true
	m.flush(context.Background())
	if len(stored) != 0 {
		t.Fatal("stored while the store was down")
	}
	fail = false
	m.flush(context.Background())
	if len(stored) != 1 || len(stored[0]) != 1 {
		t.Fatalf("stored %+v, want one period of one record", stored)
	}
	r := stored[0][0]
	// a: 0→10, 10→20 = 20 s; b: 20→30 = 10 s; c: never (stale reports).
	if math.Abs(r.InstanceSeconds-30) > 1e-9 {
		t.Errorf("instance-seconds %v, want 30", r.InstanceSeconds)
	}
	// a: 200+100; b: 1000 then a restart's 50.
	if r.ChannelBytes != 1350 {
		t.Errorf("channel bytes %d, want 1350", r.ChannelBytes)
	}
	if r.Service != "gb" || r.Role != "web" || r.VCPUs != 1 || r.MemoryMB != 256 || r.End.IsZero() {
		t.Errorf("record %+v", r)
	}
	// Nothing new: nothing stored.
	m.flush(context.Background())
	if len(stored) != 2 || len(stored[1]) != 0 {
		t.Errorf("an empty period stored %+v", stored)
	}
}
