package service_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/loomd"
)

// TestUpgradeThroughTheFabric: an upgrade walks the update domains with
// never more than one out of rotation (sampled throughout, and from the
// recorded history); a broken version is rolled back; a manual upgrade
// waits for each walk.
func TestUpgradeThroughTheFabric(t *testing.T) {
	t.Parallel()
	f := startFabric(t, &loomd.Config{})
	ctx := context.Background()
	for _, name := range []string{"work2", "bad"} {
		if _, err := f.op.AddImage(ctx, name, strings.NewReader(name+strings.Repeat("\x00", 4096-len(name))), nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		h := f.addHost("")
		h.mu.Lock()
		h.Broken, h.BootTime = map[string]bool{"bad": true}, 300*time.Millisecond
		h.mu.Unlock()
	}
	manifest := func(pkg, extra string) []byte {
		return []byte("name: gb\nupdateDomains: 3\nupgradeTimeout: 3s\n" + extra + "roles:\n" +
			"  - {name: web, kind: web, package: " + pkg + ", instances: 3, memory: 64MiB, endpoint: {port: 80}}\n" +
			"  - {name: worker, kind: worker, package: " + pkg + ", instances: 3, memory: 64MiB}\n")
	}
	if _, err := f.op.DeployService(ctx, manifest("work", "")); err != nil {
		t.Fatal(err)
	}
	ready := func(pkg string) func() bool {
		return func() bool {
			vs, err := f.op.VMs(ctx)
			if err != nil {
				return false
			}
			n := 0
			for _, v := range vs {
				if v.Service == "gb" && v.Package == pkg && v.State == api.VMStateRunning && v.Rebooted == v.RebootGen {
					n++
				}
			}
			return n == 6
		}
	}
	waitFor(t, 15*time.Second, "6 instances Ready", ready("work"))

	// Sample the instances while upgrading: never two domains out.
	var mu sync.Mutex
	var worst []int
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for sctx.Err() == nil {
			if vs, err := f.op.VMs(sctx); err == nil {
				out := map[int]bool{}
				for _, v := range vs {
					if v.Service == "gb" && v.Desired == api.VMRunning && (v.State != api.VMStateRunning || v.Rebooted < v.RebootGen) {
						out[v.UpdateDomain] = true
					}
				}
				mu.Lock()
				if len(out) > len(worst) {
					worst = worst[:0]
					for d := range out {
						worst = append(worst, d)
					}
				}
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	walkEnds := func(want api.WalkState) api.Service {
		var s api.Service
		waitFor(t, 30*time.Second, "the walk "+string(want), func() bool {
			var err error
			s, err = f.op.Service(ctx, "gb")
			return err == nil && s.Walk != nil && !s.Walk.State.Active()
		})
		if s.Walk.State != want {
			t.Fatalf("walk ended %s (%s), want %s", s.Walk.State, s.Walk.Reason, want)
		}
		return s
	}
	if _, err := f.op.UpgradeService(ctx, "gb", manifest("work2", ""), ""); err != nil {
		t.Fatal(err)
	}
	s := walkEnds(api.WalkDone)
	waitFor(t, 10*time.Second, "6 instances Ready on work2", ready("work2"))
	checkHistory(t, s.Walk.History)

	// A broken version: domain 0 never comes back; rolled back to work2.
	if _, err := f.op.UpgradeService(ctx, "gb", manifest("bad", ""), ""); err != nil {
		t.Fatal(err)
	}
	s = walkEnds(api.WalkRolledBack)
	if !strings.Contains(s.Walk.Reason, "update domain 0 not Ready within 3s") {
		t.Errorf("rollback reason: %s", s.Walk.Reason)
	}
	waitFor(t, 10*time.Second, "6 instances Ready on work2 after the rollback", ready("work2"))
	if s.Roles[0].Package != "work2" {
		t.Errorf("the service's web role after the rollback: %s", s.Roles[0].Package)
	}
	checkHistory(t, s.Walk.History)

	// Manual: nothing moves until walked.
	if s, err := f.op.UpgradeService(ctx, "gb", manifest("work", ""), api.UpgradeManual); err != nil || s.Walk.State != api.WalkWaiting {
		t.Fatalf("manual upgrade: %+v, %v", s.Walk, err)
	}
	time.Sleep(time.Second)
	if ready("work2")() != true {
		t.Fatal("a manual upgrade moved before any walk")
	}
	for d := range 3 {
		if _, err := f.op.WalkService(ctx, "gb"); err != nil {
			t.Fatalf("walk %d: %v", d, err)
		}
		waitFor(t, 10*time.Second, "the domain walked", func() bool {
			s, err := f.op.Service(ctx, "gb")
			return err == nil && len(s.Walk.Done) == d+1 && s.Walk.State != api.WalkUpgrading
		})
	}
	walkEnds(api.WalkDone)
	if _, err := f.op.WalkService(ctx, "gb"); err == nil || !strings.Contains(err.Error(), "not waiting for a walk") {
		t.Errorf("walk with nothing to walk: %v", err)
	}
	waitFor(t, 10*time.Second, "6 instances Ready on work", ready("work"))
	stop()
	wg.Wait()
	if len(worst) == 0 {
		t.Error("the sampler never saw a domain out of rotation: it checked nothing")
	}
	if len(worst) > 1 {
		t.Errorf("domains %v were out of rotation at once", worst)
	}
}

// checkHistory asserts from a walk's recorded history that each domain
// was done before the next started.
func checkHistory(t *testing.T, h []api.WalkEvent) {
	t.Helper()
	open := -1
	for _, e := range h {
		switch e.Event {
		case "started":
			if open >= 0 {
				t.Errorf("domain %d started while domain %d was out: %+v", e.Domain, open, h)
			}
			open = e.Domain
		case "done", "failed":
			open = -1
		}
	}
}
