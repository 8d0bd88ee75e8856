package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/bmc"
)

// ErrConflict means a report or request does not fit the node's state.
var ErrConflict = errors.New("conflict")

// Provisioning, on top of the phases in node.go:
//
//	Registered  --agent starts the provision goal-->  Imaging
//	Imaging     --written and verified-->             Imaged
//	Imaging     --any verification or I/O error-->    Failed (Reason)
//	Imaged      --agent hands over (kexec)-->         Booting
//	Booting     --host agent registers-->             Ready
//	Failed      --reprovision-->                      (goal: provision again)
//
// Decommissioning (Decommission set; see Decommission):
//
//	any         --decommission (BMC: PXE once, cycle)--> (goal: wipe)
//	Registered  --agent erases the disks-->           Wiping
//	Wiping      --all disks erased-->                 Decommissioned (Wiped; BMC: off)
//	Wiping      --an erase failed-->                  Failed (Reason)
//
// A node is to be imaged while Provision (bumped by provision and
// reprovision) differs from Imaged and from Failed (the generation that
// failed). Agents report their phase with every heartbeat; Transition
// reconciles it with the stored node, so a lost report is repaired by the
// next one.

// Transition is the pure decision for an agent's report st on node n.
// It returns the node as it should be stored.
func Transition(n api.Node, st api.Status, now time.Time) (api.Node, error) {
	set := func(p api.Phase) { n.SetPhase(p, now, st.Reason) }
	pending := n.Provision > 0 && n.Imaged != n.Provision && n.Failed != n.Provision
	switch st.Phase {
	case "":
		if n.Phase == api.PhaseUnreachable {
			if n.Mode == api.ModeHost {
				set(api.PhaseReady)
			} else {
				set(api.PhaseRegistered)
			}
		}
	case api.PhaseImaging:
		if st.Provision != n.Provision || !pending {
			return n, fmt.Errorf("%w: imaging generation %d, but the node's pending generation is %d (imaged %d, failed %d)", ErrConflict, st.Provision, n.Provision, n.Imaged, n.Failed)
		}
		set(api.PhaseImaging)
		n.Reason = ""
	case api.PhaseImaged:
		if st.Provision != n.Provision {
			return n, fmt.Errorf("%w: imaged generation %d, but the node wants %d", ErrConflict, st.Provision, n.Provision)
		}
		n.Imaged = st.Provision
		set(api.PhaseImaged)
	case api.PhaseFailed:
		if n.Decommission {
			n.Reason = "decommission: " + st.Reason
			n.SetPhase(api.PhaseFailed, now, n.Reason)
			break
		}
		if st.Provision != n.Provision {
			return n, fmt.Errorf("%w: failure of generation %d, but the node wants %d", ErrConflict, st.Provision, n.Provision)
		}
		n.Failed = st.Provision
		n.Reason = st.Reason
		if n.Reason == "" {
			n.Reason = "the agent reported a failure without a reason"
		}
		set(api.PhaseFailed)
	case api.PhaseWiping:
		if !n.Decommission {
			return n, fmt.Errorf("%w: wiping, but the node is not being decommissioned", ErrConflict)
		}
		set(api.PhaseWiping)
	case api.PhaseDecommissioned:
		if !n.Decommission {
			return n, fmt.Errorf("%w: wiped, but the node is not being decommissioned", ErrConflict)
		}
		n.Wiped = st.Reason
		n.SetPhase(api.PhaseDecommissioned, now, "disks erased")
	case api.PhaseBooting:
		if n.Provision == 0 || n.Imaged != n.Provision {
			return n, fmt.Errorf("%w: booting the host, but generation %d is not imaged (imaged %d)", ErrConflict, n.Provision, n.Imaged)
		}
		set(api.PhaseBooting)
	default:
		return n, fmt.Errorf("%w: an agent cannot report phase %q", ErrConflict, st.Phase)
	}
	if st.IP != "" {
		n.IP = st.IP
	}
	return n, nil
}

// GoalFor is the pure part of the goal: which action a node's state asks for.
func GoalFor(n api.Node) api.Action {
	switch {
	case n.Decommission && (n.Phase == api.PhaseDecommissioned || n.Phase == api.PhaseFailed):
		return api.ActionNone // done, or failed: the operator looks
	case n.Decommission:
		return api.ActionWipe
	case n.Profile == "" || n.Provision == 0:
		return api.ActionNone
	case n.Imaged == n.Provision:
		return api.ActionBootHost
	case n.Failed == n.Provision:
		return api.ActionNone // wait for reprovision
	}
	return api.ActionProvision
}

// Goal computes a node's goal state.
func (r *Registry) Goal(ctx context.Context, id string) (api.Goal, error) {
	ps := r.cfg.Store
	n, rev, err := ps.NodeRev(ctx, id)
	if err != nil {
		return api.Goal{}, err
	}
	g := api.Goal{Incarnation: rev, Action: GoalFor(n), Provision: n.Provision}
	if n.Mode == api.ModeHost && r.cfg.Guests != nil {
		if g.VMs, err = r.cfg.Guests.GoalVMs(ctx, id); err != nil {
			return api.Goal{}, err
		}
	}
	if g.Action == api.ActionBootHost {
		if p, err := ps.Profile(ctx, n.Profile); err == nil {
			g.Profile = &p // for its kernel arguments
		}
	}
	if g.Action != api.ActionProvision {
		return g, nil
	}
	p, err := ps.Profile(ctx, n.Profile)
	if err == nil {
		var m api.Manifest
		m, err = ps.Image(ctx, p.Image)
		if err == nil {
			g.Profile, g.Image, g.ImageURL = &p, &m, "/v1/images/"+m.Name+"/blob"
			return g, nil
		}
		err = fmt.Errorf("image %s of profile %s: %w", p.Image, p.Name, err)
	} else {
		err = fmt.Errorf("profile %s: %w", n.Profile, err)
	}
	// The goal cannot be met: the node fails with the reason.
	r.log.Warn("provisioning impossible", "node", id, "err", err)
	_, uerr := r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
		*n, _ = Transition(*n, api.Status{Phase: api.PhaseFailed, Provision: n.Provision, Reason: err.Error()}, r.cfg.Now())
		return nil
	})
	if uerr != nil {
		return api.Goal{}, uerr
	}
	return r.Goal(ctx, id)
}

// WaitGoal waits until the node's goal incarnation moves past rev.
func (r *Registry) WaitGoal(ctx context.Context, id string, rev int64) error {
	ps := r.cfg.Store
	return ps.WaitNode(ctx, id, rev)
}

// Report applies an authenticated agent's heartbeat and phase report.
func (r *Registry) Report(ctx context.Context, id string, st api.Status) error {
	now := r.cfg.Now()
	r.touch(id, now)
	r.mu.Lock()
	last := r.progress[id]
	if st.Progress != nil {
		p := *st.Progress
		r.progress[id] = &p
	} else if st.Phase != "" && st.Phase != api.PhaseImaging {
		delete(r.progress, id)
	}
	r.mu.Unlock()
	n, err := r.cfg.Store.Node(ctx, id)
	if err != nil {
		return err
	}
	want, err := Transition(n, st, now)
	if err != nil {
		return err
	}
	if n.Mode == api.ModeHost && r.cfg.Guests != nil {
		if err := r.cfg.Guests.ReportVMs(ctx, id, st); err != nil {
			return fmt.Errorf("VM report: %w", err)
		}
	}
	if want.Phase == n.Phase && want.IP == n.IP && want.Imaged == n.Imaged && want.Failed == n.Failed && want.Reason == n.Reason {
		return nil // a plain heartbeat: nothing to write
	}
	decommissioned := false
	var imaged, failed bool
	var imagingFor time.Duration
	stored, err := r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
		next, err := Transition(*n, st, now)
		if err != nil {
			return err
		}
		if next.Phase != n.Phase {
			r.log.Info("node phase", "node", id, "from", n.Phase, "to", next.Phase, "reason", next.Reason)
		}
		decommissioned = next.Phase == api.PhaseDecommissioned && n.Phase != api.PhaseDecommissioned
		imaged = n.Phase == api.PhaseImaging && next.Phase == api.PhaseImaged
		failed = n.Phase != api.PhaseFailed && next.Phase == api.PhaseFailed && !next.Decommission
		imagingFor = now.Sub(n.PhaseChanged)
		*n = next
		return nil
	})
	if o := r.cfg.Observer; err == nil && o != nil {
		switch {
		case imaged:
			var bytes uint64
			if last != nil {
				bytes = last.Total
			}
			o.Imaged(bytes, imagingFor)
		case failed:
			o.ImagingFailed(api.FailureCause(st.Cause))
		}
	}
	if err == nil && decommissioned {
		r.log.Info("node decommissioned", "node", id, "wiped", stored.Wiped)
		if stored.BMC != nil {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				if _, err := r.Power(context.WithoutCancel(ctx), id, bmc.OpOff, "decommissioned: disks erased"); err != nil {
					r.log.Warn("powering off a decommissioned node", "node", id, "err", err)
				}
			}()
		}
	}
	return err
}

// Decommission asks for node id's disks to be erased (the strongest way
// each offers) and the node powered off. A node with a BMC is booted from
// the network at once (PXE once, power cycle) into the maintenance OS,
// which wipes; a host without one reboots into it when it sees the goal.
func (r *Registry) Decommission(ctx context.Context, id string) (api.Node, error) {
	n, err := r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
		if n.Phase == api.PhaseEnrolled || n.Phase == api.PhaseDiscovered && n.Inventory == nil {
			return fmt.Errorf("%w: node %s has never run the maintenance OS: nothing of Loom's is on it", ErrConflict, id)
		}
		n.Decommission, n.Wiped = true, ""
		if n.Phase == api.PhaseFailed || n.Phase == api.PhaseDecommissioned {
			n.SetPhase(api.PhaseUnreachable, r.cfg.Now(), "decommission requested again")
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	r.log.Info("node to be decommissioned", "node", id, "phase", n.Phase)
	if n.BMC == nil || n.Phase == api.PhaseRegistered && n.Mode == api.ModeMaintenance {
		return n, nil // its agent sees the goal
	}
	if err := r.netboot(ctx, id, "decommission"); err != nil {
		return n, fmt.Errorf("decommission recorded, but booting the node through its BMC failed: %w", err)
	}
	return r.Get(ctx, id)
}

// Provision sets the profile a node is to be imaged with and asks for a
// new imaging generation.
func (r *Registry) Provision(ctx context.Context, id, profile string) (api.Node, error) {
	ps := r.cfg.Store
	if _, err := ps.Profile(ctx, profile); err != nil {
		return api.Node{}, fmt.Errorf("profile %q: %w", profile, err)
	}
	return r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
		n.Profile = profile
		n.Provision++
		n.Decommission, n.Wiped = false, ""
		return nil
	})
}

// Reprovision asks for the node to be imaged again with its profile. A
// node with a BMC is then booted from the network at once (PXE once, power
// cycle); if that fails, the request stands and the error wraps ErrBMC.
func (r *Registry) Reprovision(ctx context.Context, id string) (api.Node, error) {
	n, err := r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
		if n.Profile == "" {
			return fmt.Errorf("%w: node %s has no profile; use provision", ErrConflict, id)
		}
		n.Provision++
		n.Decommission, n.Wiped = false, ""
		return nil
	})
	if err != nil || n.BMC == nil {
		return n, err
	}
	if err := r.netboot(ctx, id, fmt.Sprintf("reprovision (generation %d)", n.Provision)); err != nil {
		return n, fmt.Errorf("reprovisioning recorded, but booting the node through its BMC failed: %w", err)
	}
	return r.Get(ctx, id)
}

// BootChoice says what the machine with this MAC boots from the network:
// the maintenance OS unless the node has its current provisioning
// generation on disk; then what its profile says (kexec by default: the
// maintenance OS loads the disk's host kernel; local: the disk's own boot
// loader; custom: the profile's kernel and initrd).
func (r *Registry) BootChoice(ctx context.Context, mac string) api.BootChoice {
	maintenance := api.BootChoice{Kind: api.BootMaintenance}
	id, err := r.cfg.Store.NodeIDByMAC(ctx, mac)
	if err != nil {
		return maintenance
	}
	n, err := r.cfg.Store.Node(ctx, id)
	if err != nil || GoalFor(n) != api.ActionBootHost || n.Decommission {
		return maintenance
	}
	ps := r.cfg.Store
	p, err := ps.Profile(ctx, n.Profile)
	if err != nil {
		// The profile is gone: the maintenance OS boots the disk as it was
		// imaged (the goal carries no kernel arguments then).
		r.log.Warn("netboot: the node's profile is gone; booting its disk through the maintenance OS", "node", n.ID, "profile", n.Profile, "err", err)
		return api.BootChoice{Kind: api.BootKexec}
	}
	switch p.Boot {
	case api.BootLocal:
		return api.BootChoice{Kind: api.BootLocal}
	case api.BootCustom:
		return api.BootChoice{Kind: api.BootCustom, Kernel: p.Kernel, Initrd: p.Initrd, Args: p.KernelArgs}
	}
	return api.BootChoice{Kind: api.BootKexec}
}

// ProfilesUsing names the first profile that uses image ("" if none).
func ProfilesUsing(ctx context.Context, profiles func(context.Context) ([]api.Profile, error), image string) (string, error) {
	ps, err := profiles(ctx)
	if err != nil {
		return "", err
	}
	for _, p := range ps {
		if p.Image == image {
			return "profile " + p.Name, nil
		}
	}
	return "", nil
}
