package service

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// Upgrades walk a service's update domains one at a time. For the domain
// being done, every instance whose package or settings differ from the
// new version gets them and a reboot (RebootGen): its host restarts the
// guest into the new version, and the endpoint takes it out of rotation
// until it is back Ready (InRotation). When every instance of the domain
// is Ready again the domain is done and the next starts (auto), or the
// walk waits for `loom service walk` (manual). A domain not back within
// the service's UpgradeTimeout fails the walk: the service's roles go back
// to the old version and the domains walk back one at a time, the failed
// one first. Only one domain is ever out, so the endpoint always has all
// but one domain serving.

// maxHistory bounds a walk's recorded history.
const maxHistory = 200

// StartWalk is svc upgraded to next: next's roles (packages, settings,
// instance counts) with the old ones kept for a rollback, and a walk of
// every update domain from the first. mode overrides next's upgrade mode
// when set. Refused (ErrBadRequest) if a walk is going, or if next
// renames, adds or removes roles, changes a role's kind or size, or the
// number of update domains: those need a new deployment.
func StartWalk(svc, next api.Service, mode api.UpgradeMode, now time.Time) (api.Service, error) {
	if svc.Walk != nil && svc.Walk.State.Active() {
		return svc, fmt.Errorf("%w: service %s is being upgraded already (%s; loom service show %s)", ErrBadRequest, svc.Name, svc.Walk.State, svc.Name)
	}
	var problems []string
	if next.Name != svc.Name {
		problems = append(problems, fmt.Sprintf("name: %q: the manifest is of another service", next.Name))
	}
	if next.UpdateDomains != svc.UpdateDomains {
		problems = append(problems, fmt.Sprintf("updateDomains: %d: the service has %d (a new number needs a new deployment)", next.UpdateDomains, svc.UpdateDomains))
	}
	if len(next.Roles) != len(svc.Roles) {
		problems = append(problems, fmt.Sprintf("roles: %d roles: the service has %d (adding or removing roles needs a new deployment)", len(next.Roles), len(svc.Roles)))
	}
	for _, r := range next.Roles {
		old, ok := svc.Role(r.Name)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("role %s: the service has no such role", r.Name))
		case old.Kind != r.Kind:
			problems = append(problems, fmt.Sprintf("role %s: kind %s: it is a %s role", r.Name, r.Kind, old.Kind))
		case old.VCPUs != r.VCPUs || old.MemoryMB != r.MemoryMB:
			problems = append(problems, fmt.Sprintf("role %s: size %d vCPUs %d MiB: its instances have %d vCPUs %d MiB (a new size needs a new deployment)", r.Name, r.VCPUs, r.MemoryMB, old.VCPUs, old.MemoryMB))
		}
	}
	if len(problems) > 0 {
		return svc, fmt.Errorf("%w: upgrade refused: %s", ErrBadRequest, strings.Join(problems, "; "))
	}
	if mode == "" {
		mode = next.Upgrade
	}
	w := &api.Walk{State: api.WalkUpgrading, Mode: mode, From: svc.Roles, Seq: 1}
	if svc.Walk != nil {
		w.Seq = svc.Walk.Seq + 1
	}
	for d := range svc.UpdateDomains {
		w.Order = append(w.Order, d)
	}
	if mode == api.UpgradeManual {
		w.State = api.WalkWaiting
		w.History = append(w.History, api.WalkEvent{Time: now, Domain: 0, Event: "waiting", Note: "manual: loom service walk " + svc.Name})
	}
	up := svc
	up.Roles, up.Upgrade, up.UpgradeTimeout, up.Walk = next.Roles, next.Upgrade, next.UpgradeTimeout, w
	return up, nil
}

// Step advances svc's walk given every VM: what to write to the VMs (new
// version and a reboot for the domain being done), and svc with its walk
// moved on (Walk.Seq grows with every change). Pure.
func Step(svc api.Service, vs []api.VM, now time.Time) (api.Service, []api.VM) {
	if svc.Walk == nil || !svc.Walk.State.Active() {
		return svc, nil
	}
	w := *svc.Walk
	w.Order, w.Done, w.History = slices.Clone(w.Order), slices.Clone(w.Done), slices.Clone(w.History)
	svc.Walk = &w
	svc.Roles = slices.Clone(svc.Roles)
	record := func(d int, event, note string) {
		w.History = append(w.History, api.WalkEvent{Time: now, Domain: d, Event: event, Note: note})
		if len(w.History) > maxHistory {
			w.History = w.History[len(w.History)-maxHistory:]
		}
		w.Seq++
	}
	timeout := time.Duration(svc.UpgradeTimeout)
	if timeout <= 0 {
		timeout = api.DefaultUpgradeTimeout
	}
	for {
		if len(w.Order) == 0 {
			if w.State == api.WalkRollingBk {
				w.State = api.WalkRolledBack
			} else {
				w.State, w.Reason = api.WalkDone, ""
			}
			record(-1, string(w.State), "")
			return svc, nil
		}
		if w.State == api.WalkWaiting {
			return svc, nil
		}
		d := w.Order[0]
		if w.DomainStarted.IsZero() {
			w.DomainStarted = now
			record(d, "started", "")
		}
		var puts []api.VM
		var notReady []string
		for _, v := range vs {
			if v.Service != svc.Name || v.UpdateDomain != d || v.Desired == api.VMDeleted || v.Node == "" {
				continue
			}
			r, ok := svc.Role(v.Role)
			if !ok {
				continue
			}
			if !sameVersion(v, r) {
				setVersion(&v, r)
				v.RebootGen++
				puts = append(puts, v)
				continue
			}
			if v.Desired == api.VMRunning && (v.Rebooted < v.RebootGen || v.State != api.VMStateRunning) {
				notReady = append(notReady, fmt.Sprintf("%s (%s)", v.ID, cmp.Or(v.Reason, string(v.State))))
			}
		}
		if len(puts) > 0 {
			w.Seq++
			return svc, puts
		}
		if len(notReady) == 0 {
			record(d, "done", "")
			w.Done = append(w.Done, d)
			w.Order, w.DomainStarted = w.Order[1:], time.Time{}
			if w.Mode == api.UpgradeManual && w.State == api.WalkUpgrading && len(w.Order) > 0 {
				w.State = api.WalkWaiting
				record(w.Order[0], "waiting", "manual: loom service walk "+svc.Name)
			}
			continue
		}
		if now.Sub(w.DomainStarted) < timeout {
			return svc, nil
		}
		slices.Sort(notReady)
		why := fmt.Sprintf("update domain %d not Ready within %v: %s", d, timeout, strings.Join(notReady, ", "))
		if w.State == api.WalkRollingBk {
			w.State, w.Reason = api.WalkFailed, "the rollback failed: "+why
			record(d, "failed", why)
			return svc, nil
		}
		record(d, "failed", why)
		w.State, w.Reason = api.WalkRollingBk, why
		// Back to the old version: the failed domain first, then those
		// done, latest first.
		done := slices.Clone(w.Done)
		slices.Reverse(done)
		w.Order, w.Done, w.DomainStarted = append([]int{d}, done...), nil, time.Time{}
		for i, r := range svc.Roles {
			for _, f := range w.From {
				if f.Name == r.Name {
					copyVersion(&svc.Roles[i], f)
				}
			}
		}
		record(d, "rollback", "")
	}
}

// A role's version is what an upgrade may change in place: its package,
// settings and health probe.

// sameVersion reports whether instance v runs role r's version.
func sameVersion(v api.VM, r api.ServiceRole) bool {
	return v.Package == r.Package && maps.Equal(v.Settings, r.Settings) && sameProbe(v.Health, r.Health)
}

func sameProbe(a, b *api.HealthProbe) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// setVersion gives instance v role r's version.
func setVersion(v *api.VM, r api.ServiceRole) {
	v.Package, v.Settings, v.Health = r.Package, maps.Clone(r.Settings), cloneProbe(r.Health)
}

// copyVersion gives role dst the version of src.
func copyVersion(dst *api.ServiceRole, src api.ServiceRole) {
	dst.Package, dst.Settings, dst.Health = src.Package, maps.Clone(src.Settings), cloneProbe(src.Health)
}

func cloneProbe(p *api.HealthProbe) *api.HealthProbe {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}
