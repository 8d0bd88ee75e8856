package service_test

import (
	"context"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/loomd"
)

// TestScaleAndInstanceActions: scale 5 → 8 → 3 converges with what is
// left spread over the hosts; stop, start and reboot act on one instance
// only.
func TestScaleAndInstanceActions(t *testing.T) {
	t.Parallel()
	f := startFabric(t, &loomd.Config{})
	for _, rack := range []string{"r1", "r1", "r2", "r2"} {
		f.addHost(rack)
	}
	ctx := context.Background()
	if _, err := f.op.DeployService(ctx, []byte("name: s\nroles:\n  - {name: w, kind: worker, package: work, instances: 5, memory: 64MiB}\n")); err != nil {
		t.Fatal(err)
	}
	converged := func(n int) {
		t.Helper()
		waitFor(t, 15*time.Second, "converged", func() bool {
			ins := f.instances("s")
			racks := map[string]int{}
			for _, in := range ins {
				if in.State != api.InstanceReady {
					return false
				}
				racks[in.FaultDomain]++
			}
			return len(ins) == n && (n < 2 || (racks["r1"] > 0 && racks["r2"] > 0 && racks["r1"]-racks["r2"] <= 1 && racks["r2"]-racks["r1"] <= 1))
		})
	}
	converged(5)
	for _, n := range []int{8, 3} {
		if _, err := f.op.ScaleService(ctx, "s", "w", n); err != nil {
			t.Fatal(err)
		}
		converged(n)
	}
	ins := f.instances("s")
	id := ins[0].ID
	state := func(want api.InstanceState) func() bool {
		return func() bool {
			for _, in := range f.instances("s") {
				if in.ID == id {
					return in.State == want
				}
			}
			return false
		}
	}
	if _, err := f.op.VMAction(ctx, id, api.VMStop); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "stopped", state(api.InstanceStopped))
	if got := f.instances("s"); len(got) != 3 {
		t.Errorf("a stopped instance still counts: %d instances, want 3 (no replacement)", len(got))
	}
	if _, err := f.op.VMAction(ctx, id, api.VMStart); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "started", state(api.InstanceReady))
	before, err := f.op.VM(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.op.VMAction(ctx, id, api.VMReboot); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "rebooted", func() bool {
		v, err := f.op.VM(ctx, id)
		return err == nil && v.Rebooted == before.RebootGen+1 && v.State == api.VMStateRunning
	})
	for _, in := range f.instances("s") {
		if in.ID != id && in.State != api.InstanceReady {
			t.Errorf("%s: %s, untouched instances stay Ready", in.ID, in.State)
		}
	}
}

// TestHalfTheHostsSilent: half the hosts go silent at once (a network
// split, or a sick controller): past LostAfter nothing is evicted, as the
// cap says; when they come back nothing has moved.
func TestHalfTheHostsSilent(t *testing.T) {
	t.Parallel()
	f := startFabric(t, &loomd.Config{LostAfter: time.Second})
	for range 4 {
		f.addHost("")
	}
	ctx := context.Background()
	if _, err := f.op.DeployService(ctx, []byte("name: s\nroles:\n  - {name: w, kind: worker, package: work, instances: 4, memory: 64MiB}\n")); err != nil {
		t.Fatal(err)
	}
	var before []api.Instance
	waitFor(t, 15*time.Second, "4 Ready", func() bool {
		before = f.instances("s")
		n := 0
		for _, in := range before {
			if in.State == api.InstanceReady {
				n++
			}
		}
		return n == 4
	})
	f.hosts[0].Stop()
	f.hosts[1].Stop()
	waitFor(t, 10*time.Second, "both Unreachable", func() bool {
		n := 0
		for _, h := range f.hosts[:2] {
			if nd, err := f.op.Node(ctx, h.ID()); err == nil && nd.Phase == api.PhaseUnreachable {
				n++
			}
		}
		return n == 2
	})
	time.Sleep(4 * time.Second) // well past LostAfter, several passes
	after := f.instances("s")
	if len(after) != 4 {
		t.Fatalf("%d instances with half the hosts silent, want the same 4", len(after))
	}
	for i, in := range after {
		if in.ID != before[i].ID || in.State == api.InstanceStopping {
			t.Errorf("instance %s: %s (%s): evicted past the cap", in.ID, in.State, in.Reason)
		}
	}
	f.hosts[0].Start()
	f.hosts[1].Start()
	waitFor(t, 10*time.Second, "all Ready again, none moved", func() bool {
		ins := f.instances("s")
		for i, in := range ins {
			if in.State != api.InstanceReady || in.ID != before[i].ID || in.Node != before[i].Node {
				return false
			}
		}
		return len(ins) == 4
	})
}
