package service

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// hosts simulates host agents for Step: a guest asked to reboot restarts
// (Starting, the generation acted on) on the next tick and is Running on
// the one after, unless its package is broken.
func hostsTick(vs []api.VM, broken string) {
	for i := range vs {
		v := &vs[i]
		switch {
		case v.Rebooted < v.RebootGen:
			v.Rebooted, v.State = v.RebootGen, api.VMStateStarting
		case v.State == api.VMStateStarting && v.Package != broken:
			v.State = api.VMStateRunning
		}
	}
}

func walkFixture() (api.Service, []api.VM) {
	svc := api.Service{Name: "gb", UpdateDomains: 3, UpgradeTimeout: api.Duration(time.Minute), Roles: []api.ServiceRole{
		{Name: "web", Kind: api.RoleWeb, Package: "v1", Instances: 4, VCPUs: 1, MemoryMB: 64},
		{Name: "worker", Kind: api.RoleWorker, Package: "v1", Instances: 2, VCPUs: 1, MemoryMB: 64},
	}}
	var vs []api.VM
	for i := range 6 {
		role := "web"
		if i >= 4 {
			role = "worker"
		}
		vs = append(vs, api.VM{ID: fmt.Sprintf("i%d", i), Node: "n", Service: "gb", Role: role, UpdateDomain: i % 3, Package: "v1",
			Desired: api.VMRunning, VMStatus: api.VMStatus{State: api.VMStateRunning, Endpoint: "h:1"}})
	}
	return svc, vs
}

func applyPuts(vs, puts []api.VM) {
	for _, p := range puts {
		for i := range vs {
			if vs[i].ID == p.ID {
				vs[i] = p
			}
		}
	}
}

// run steps the walk and the simulated hosts until the walk ends,
// checking that no two update domains are ever out of rotation at once.
func run(t *testing.T, svc api.Service, vs []api.VM, broken string, now time.Time) (api.Service, time.Time) {
	t.Helper()
	for tick := 0; svc.Walk.State.Active(); tick++ {
		if tick > 500 {
			t.Fatalf("walk did not end: %+v", svc.Walk)
		}
		var puts []api.VM
		svc, puts = Step(svc, vs, now)
		applyPuts(vs, puts)
		out := map[int]bool{}
		for _, v := range vs {
			if !InRotation(v) {
				out[v.UpdateDomain] = true
			}
		}
		if len(out) > 1 {
			t.Fatalf("tick %d: domains %v out of rotation at once", tick, out)
		}
		hostsTick(vs, broken)
		now = now.Add(5 * time.Second)
	}
	return svc, now
}

func TestStepWalksOneDomainAtATime(t *testing.T) {
	svc, vs := walkFixture()
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	next := svc
	next.Roles = []api.ServiceRole{svc.Roles[0], svc.Roles[1]}
	next.Roles[0].Package, next.Roles[1].Package = "v2", "v2"
	next.Roles[0].Settings = map[string]string{"greeting": "hi"}
	up, err := StartWalk(svc, next, api.UpgradeAuto, now)
	if err != nil {
		t.Fatal(err)
	}
	up, now = run(t, up, vs, "", now)
	if up.Walk.State != api.WalkDone {
		t.Fatalf("walk ended %s: %s", up.Walk.State, up.Walk.Reason)
	}
	for _, v := range vs {
		if v.Package != "v2" || v.State != api.VMStateRunning || (v.Role == "web" && v.Settings["greeting"] != "hi") {
			t.Errorf("%s after the walk: %s %v %s", v.ID, v.Package, v.Settings, v.State)
		}
	}
	var order []string
	for _, e := range up.Walk.History {
		order = append(order, fmt.Sprintf("%d:%s", e.Domain, e.Event))
	}
	if got, want := strings.Join(order, " "), "0:started 0:done 1:started 1:done 2:started 2:done -1:done"; got != want {
		t.Errorf("history %s, want %s", got, want)
	}

	// v3 is broken: its first domain never comes back, the walk fails
	// after the timeout and every instance goes back to v2.
	next.Roles[0].Package, next.Roles[1].Package = "v3", "v3"
	up2, err := StartWalk(up, next, api.UpgradeAuto, now)
	if err != nil {
		t.Fatal(err)
	}
	up2, _ = run(t, up2, vs, "v3", now)
	if up2.Walk.State != api.WalkRolledBack || !strings.Contains(up2.Walk.Reason, "update domain 0 not Ready within 1m0s") {
		t.Fatalf("broken upgrade ended %s: %s", up2.Walk.State, up2.Walk.Reason)
	}
	for _, v := range vs {
		if v.Package != "v2" || v.State != api.VMStateRunning {
			t.Errorf("%s after the rollback: %s %s", v.ID, v.Package, v.State)
		}
	}
	if up2.Roles[0].Package != "v2" || up2.Roles[1].Package != "v2" {
		t.Errorf("the service's roles after the rollback: %+v", up2.Roles)
	}
}

func TestStepManualWaitsForWalk(t *testing.T) {
	svc, vs := walkFixture()
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	next := svc
	next.Roles = []api.ServiceRole{svc.Roles[0], svc.Roles[1]}
	next.Roles[0].Package = "v2"
	up, err := StartWalk(svc, next, api.UpgradeManual, now)
	if err != nil {
		t.Fatal(err)
	}
	for d := range 3 {
		for range 5 { // waits, touching nothing
			var puts []api.VM
			up, puts = Step(up, vs, now)
			if len(puts) > 0 || up.Walk.State != api.WalkWaiting {
				t.Fatalf("domain %d: a manual walk moved by itself: %s, %d writes", d, up.Walk.State, len(puts))
			}
		}
		up.Walk.State = api.WalkUpgrading // loom service walk
		for up.Walk.State == api.WalkUpgrading {
			var puts []api.VM
			up, puts = Step(up, vs, now)
			applyPuts(vs, puts)
			hostsTick(vs, "")
		}
		for _, v := range vs {
			if v.Role == "web" && (v.Package == "v2") != (v.UpdateDomain <= d) {
				t.Errorf("after walking domain %d: %s (domain %d) runs %s", d, v.ID, v.UpdateDomain, v.Package)
			}
		}
	}
	if up.Walk.State != api.WalkDone {
		t.Errorf("after three walks: %s", up.Walk.State)
	}
}

func TestStartWalkRefuses(t *testing.T) {
	svc, _ := walkFixture()
	now := time.Now()
	for _, tc := range []struct {
		name   string
		change func(*api.Service)
		want   string
	}{
		{"other service", func(s *api.Service) { s.Name = "other" }, "another service"},
		{"domains", func(s *api.Service) { s.UpdateDomains = 5 }, "updateDomains: 5"},
		{"role added", func(s *api.Service) { s.Roles = append(s.Roles, api.ServiceRole{Name: "x", Kind: api.RoleWorker}) }, "3 roles"},
		{"role renamed", func(s *api.Service) { s.Roles[1].Name = "cruncher" }, "role cruncher: the service has no such role"},
		{"kind", func(s *api.Service) { s.Roles[1].Kind = api.RoleWeb }, "kind web: it is a worker role"},
		{"size", func(s *api.Service) { s.Roles[0].MemoryMB = 512 }, "a new size needs a new deployment"},
	} {
		next := svc
		next.Roles = append([]api.ServiceRole(nil), svc.Roles...)
		tc.change(&next)
		if _, err := StartWalk(svc, next, "", now); err == nil || !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	going, err := StartWalk(svc, svc, api.UpgradeManual, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StartWalk(going, svc, "", now); err == nil || !strings.Contains(err.Error(), "being upgraded already") {
		t.Errorf("a second upgrade during a walk: %v", err)
	}
}

// TestUpgradeOfTheHealthProbe: a new health probe alone is a new version:
// every instance restarts into it, domain by domain, and a rollback
// restores the old one.
func TestUpgradeOfTheHealthProbe(t *testing.T) {
	svc, vs := walkFixture()
	next := svc
	next.Roles = append([]api.ServiceRole(nil), svc.Roles...)
	probe := &api.HealthProbe{Path: "/ready", Interval: api.Duration(2 * time.Second), Timeout: api.Duration(time.Second), Failures: 3}
	next.Roles[0].Health = probe
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	up, err := StartWalk(svc, next, api.UpgradeAuto, now)
	if err != nil {
		t.Fatal(err)
	}
	up, _ = run(t, up, vs, "", now)
	if up.Walk.State != api.WalkDone {
		t.Fatalf("walk %s", up.Walk.State)
	}
	for _, v := range vs {
		switch {
		case v.Role == "web" && (v.Health == nil || v.Health.Path != "/ready" || v.Health.Failures != 3 || v.RebootGen != 1):
			t.Errorf("web instance %s after the upgrade: health %+v, reboot generation %d", v.ID, v.Health, v.RebootGen)
		case v.Role == "worker" && (v.Health != nil || v.RebootGen != 0):
			t.Errorf("worker instance %s was touched: health %+v, reboot generation %d", v.ID, v.Health, v.RebootGen)
		}
	}
	// And back: the rollback's version has no probe.
	var r api.ServiceRole
	copyVersion(&r, svc.Roles[0])
	if r.Health != nil || !sameVersion(api.VM{Package: "v1"}, r) || sameVersion(vs[0], r) {
		t.Errorf("copyVersion/sameVersion: %+v", r)
	}
}
