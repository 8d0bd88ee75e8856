package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// VMs on hosts. The operator's requests change the desired state of a VM
// (in one store transaction with a bump of its node's VMGen, which moves
// the node's goal incarnation); host agents report the observed state with
// their heartbeats:
//
//	create  → Pending (placed on a Ready node with room, or refused)
//	host    → Starting → Running ⇄ Crashed (restarted with backoff) | Failed
//	stop    → Stopped;  start → Starting …;  reboot → RebootGen+1
//	delete  → Desired "deleted"; the record goes once its host no longer
//	          reports the guest (or at once if the host never had it)

// ErrNoCapacity means no node can take a VM.
var ErrNoCapacity = errors.New("no capacity")

// VMStore is what VMs need of the store.
type VMStore interface {
	VMs(ctx context.Context) ([]api.VM, error)
	VM(ctx context.Context, id string) (api.VM, error)
	ChangeVMs(ctx context.Context, fn func([]api.Node, []api.VM) (store.VMChange, error)) (store.VMChange, error)
	UpdateVMStatus(ctx context.Context, id string, fn func(*api.VM) error) error
}

// vmLive is what the registry keeps in memory per VM (usage and when it
// was last reported): metering data arrives with every heartbeat and is
// not worth a store write each time.
type vmLive struct {
	usage    *api.Usage
	observed time.Time
}

func (r *Registry) vmstore() (VMStore, error) {
	vs, ok := r.cfg.Store.(VMStore)
	if !ok {
		return nil, errors.New("the store does not support VMs")
	}
	return vs, nil
}

func newVMID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "vm-" + hex.EncodeToString(b)
}

// Place is the pure placement decision: the node for req among nodes, with
// vms already placed. A named node must be Ready and have room; otherwise
// the Ready node with the most free memory that fits is chosen. The error
// says what each Ready node has left.
func Place(req api.VMRequest, nodes []api.Node, vms []api.VM) (string, error) {
	var best string
	bestMem := -1
	var notes []string
	found := false
	for _, n := range nodes {
		if req.Node != "" && n.ID != req.Node {
			continue
		}
		found = true
		if n.Phase != api.PhaseReady {
			notes = append(notes, fmt.Sprintf("%s is %s", n.ID, n.Phase))
			continue
		}
		f := api.Free(n, vms)
		if f.VCPUs < req.VCPUs || f.MemoryMB < req.MemoryMB {
			notes = append(notes, fmt.Sprintf("%s has %d vCPUs and %d MiB free", n.ID, max(f.VCPUs, 0), max(f.MemoryMB, 0)))
			continue
		}
		if f.MemoryMB > bestMem {
			best, bestMem = n.ID, f.MemoryMB
		}
	}
	if req.Node != "" && !found {
		return "", fmt.Errorf("node %q: %w", req.Node, store.ErrNotFound)
	}
	if best != "" {
		return best, nil
	}
	if len(notes) == 0 {
		notes = append(notes, "there are no nodes")
	}
	sort.Strings(notes)
	return "", fmt.Errorf("%w: no Ready node has %d vCPUs and %d MiB free (%s)", ErrNoCapacity, req.VCPUs, req.MemoryMB, strings.Join(notes, "; "))
}

// CreateVM validates req, places the VM and stores it.
func (r *Registry) CreateVM(ctx context.Context, req api.VMRequest) (api.VM, error) {
	vs, err := r.vmstore()
	if err != nil {
		return api.VM{}, err
	}
	if err := req.Validate(); err != nil {
		return api.VM{}, err
	}
	ps, err := r.pstore()
	if err != nil {
		return api.VM{}, err
	}
	if _, err := ps.Image(ctx, req.Package); err != nil {
		return api.VM{}, fmt.Errorf("package: %q: %w", req.Package, err)
	}
	vm := api.VM{
		ID: newVMID(), VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, Package: req.Package,
		Settings: req.Settings, Created: r.cfg.Now().UTC(), Desired: api.VMRunning,
		VMStatus: api.VMStatus{State: api.VMStatePending},
	}
	_, err = vs.ChangeVMs(ctx, func(nodes []api.Node, vms []api.VM) (store.VMChange, error) {
		id, err := Place(req, nodes, vms)
		if err != nil {
			return store.VMChange{}, err
		}
		vm.Node = id
		return store.VMChange{Put: []api.VM{vm}}, nil
	})
	if err != nil {
		return api.VM{}, err
	}
	r.log.Info("vm created", "vm", vm.ID, "node", vm.Node, "vcpus", vm.VCPUs, "memoryMB", vm.MemoryMB, "package", vm.Package)
	return vm, nil
}

// VMs lists every VM, with usage filled in.
func (r *Registry) VMs(ctx context.Context) ([]api.VM, error) {
	vs, err := r.vmstore()
	if err != nil {
		return nil, err
	}
	vms, err := vs.VMs(ctx)
	if err != nil {
		return nil, err
	}
	for i := range vms {
		vms[i] = r.withLive(vms[i])
	}
	sort.Slice(vms, func(i, j int) bool {
		return vms[i].Created.Before(vms[j].Created) || vms[i].Created.Equal(vms[j].Created) && vms[i].ID < vms[j].ID
	})
	return vms, nil
}

// VM returns one VM.
func (r *Registry) VM(ctx context.Context, id string) (api.VM, error) {
	vs, err := r.vmstore()
	if err != nil {
		return api.VM{}, err
	}
	v, err := vs.VM(ctx, id)
	if err != nil {
		return api.VM{}, err
	}
	return r.withLive(v), nil
}

func (r *Registry) withLive(v api.VM) api.VM {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l, ok := r.vmLive[v.ID]; ok {
		v.Usage, v.Observed = l.usage, l.observed
	}
	return v
}

// VMAction applies start, stop, reboot or delete to a VM's desired state.
func (r *Registry) VMAction(ctx context.Context, id, action string) (api.VM, error) {
	vs, err := r.vmstore()
	if err != nil {
		return api.VM{}, err
	}
	var out api.VM
	_, err = vs.ChangeVMs(ctx, func(_ []api.Node, vms []api.VM) (store.VMChange, error) {
		for _, v := range vms {
			if v.ID != id {
				continue
			}
			if v.Desired == api.VMDeleted {
				return store.VMChange{}, fmt.Errorf("%w: vm %s is being deleted", ErrConflict, id)
			}
			switch action {
			case "start":
				v.Desired = api.VMRunning
			case "stop":
				v.Desired = api.VMStopped
			case "reboot":
				if v.Desired != api.VMRunning {
					return store.VMChange{}, fmt.Errorf("%w: vm %s is stopped; start it", ErrConflict, id)
				}
				v.RebootGen++
			case "delete":
				v.Desired = api.VMDeleted
				if v.State == api.VMStatePending || v.State == "" {
					out = v
					return store.VMChange{Delete: []string{id}}, nil // its host never had it
				}
			default:
				return store.VMChange{}, fmt.Errorf("unknown action %q (want start, stop, reboot or delete)", action)
			}
			out = v
			return store.VMChange{Put: []api.VM{v}}, nil
		}
		return store.VMChange{}, fmt.Errorf("vm %q: %w", id, store.ErrNotFound)
	})
	if err == nil {
		r.log.Info("vm request", "vm", id, "action", action)
	}
	return out, err
}

// goalVMs lists node id's VMs for its goal document.
func (r *Registry) goalVMs(ctx context.Context, id string) ([]api.GoalVM, error) {
	vs, err := r.vmstore()
	if err != nil {
		return nil, nil // a store without VMs: no guests
	}
	ps, err := r.pstore()
	if err != nil {
		return nil, err
	}
	vms, err := vs.VMs(ctx)
	if err != nil {
		return nil, err
	}
	var out []api.GoalVM
	for _, v := range vms {
		if v.Node != id {
			continue
		}
		g := api.GoalVM{ID: v.ID, VCPUs: v.VCPUs, MemoryMB: v.MemoryMB, Desired: v.Desired, RebootGen: v.RebootGen, Package: v.Package, Settings: v.Settings}
		if m, err := ps.Image(ctx, v.Package); err == nil {
			g.PackageDigest, g.PackageURL = m.Digest, "/v1/images/"+m.Name+"/blob"
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// reportVMs applies a host's report of its guests: observed state to the
// store when it changed, usage to memory; deleted VMs the host no longer
// has are forgotten.
func (r *Registry) reportVMs(ctx context.Context, id string, st api.Status) error {
	vs, err := r.vmstore()
	if err != nil || (len(st.VMs) == 0 && !st.VMsComplete) {
		return nil
	}
	now := r.cfg.Now().UTC()
	r.mu.Lock()
	if r.vmLive == nil {
		r.vmLive = map[string]*vmLive{}
	}
	for _, g := range st.VMs {
		r.vmLive[g.ID] = &vmLive{usage: g.Usage, observed: now}
	}
	r.mu.Unlock()
	vms, err := vs.VMs(ctx)
	if err != nil {
		return err
	}
	reported := map[string]api.VMStatus{}
	for _, g := range st.VMs {
		reported[g.ID] = g
	}
	var gone []string
	for _, v := range vms {
		if v.Node != id {
			continue
		}
		g, ok := reported[v.ID]
		if !ok {
			if st.VMsComplete && v.Desired == api.VMDeleted {
				gone = append(gone, v.ID)
			}
			continue
		}
		if sameObserved(v.VMStatus, g) {
			continue
		}
		err := vs.UpdateVMStatus(ctx, v.ID, func(v *api.VM) error {
			if v.State != g.State {
				r.log.Info("vm state", "vm", v.ID, "node", id, "from", v.State, "to", g.State, "reason", g.Reason)
			}
			g.ID, g.Usage, g.Observed = "", nil, time.Time{}
			v.VMStatus = g
			return nil
		})
		if err != nil && !store.IsNotFound(err) {
			return err
		}
	}
	if len(gone) > 0 {
		_, err := vs.ChangeVMs(ctx, func(_ []api.Node, vms []api.VM) (store.VMChange, error) {
			var ch store.VMChange
			for _, v := range vms {
				for _, g := range gone {
					if v.ID == g && v.Desired == api.VMDeleted {
						ch.Delete = append(ch.Delete, g)
					}
				}
			}
			return ch, nil
		})
		if err != nil {
			return err
		}
		r.mu.Lock()
		for _, g := range gone {
			delete(r.vmLive, g)
		}
		r.mu.Unlock()
		r.log.Info("vms removed", "node", id, "vms", gone)
	}
	return nil
}

// sameObserved reports whether a report changes nothing worth a write.
func sameObserved(have, got api.VMStatus) bool {
	return have.State == got.State && have.Reason == got.Reason && have.Endpoint == got.Endpoint &&
		have.Restarts == got.Restarts && have.Rebooted == got.Rebooted &&
		strings.Join(have.Interfaces, ",") == strings.Join(got.Interfaces, ",")
}

// VMsUsing names the first VM whose package is image ("" if none).
func VMsUsing(ctx context.Context, vms func(context.Context) ([]api.VM, error), image string) (string, error) {
	list, err := vms(ctx)
	if err != nil {
		return "", err
	}
	for _, v := range list {
		if v.Package == image {
			return "vm " + v.ID, nil
		}
	}
	return "", nil
}
