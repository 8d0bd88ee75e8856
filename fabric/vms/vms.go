// Package vms keeps the fabric's VMs: where each is placed (Place, pure),
// what the operator wants of it, and what its host last said of it.
package vms

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
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

// Store is what VMs need of the store; *store.Store has it.
type Store interface {
	VMs(ctx context.Context) ([]api.VM, error)
	// VMsOn lists one node's VMs.
	VMsOn(ctx context.Context, node string) ([]api.VM, error)
	VM(ctx context.Context, id string) (api.VM, error)
	ChangeVMs(ctx context.Context, fn func([]api.Node, []api.VM) (store.VMChange, error)) (store.VMChange, error)
	UpdateVMStatuses(ctx context.Context, ids []string, fn func(*api.VM) bool) error
	Image(ctx context.Context, name string) (api.Manifest, error)
}

// Config wires the VM manager.
type Config struct {
	Store Store // required
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Manager is the fabric's VMs over the store. Hosts' reports of usage stay
// in its memory.
type Manager struct {
	cfg Config
	st  Store
	log *slog.Logger

	mu     sync.Mutex
	vmLive map[string]*vmLive // VM id → usage, last report
}

// New returns the manager.
func New(cfg Config, log *slog.Logger) *Manager {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, st: cfg.Store, log: log, vmLive: map[string]*vmLive{}}
}

// vmLive is what the registry keeps in memory per VM (usage and when it
// was last reported): metering data arrives with every heartbeat and is
// not worth a store write each time.
type vmLive struct {
	usage    *api.Usage
	observed time.Time
}

// NewID makes a VM id ("vm-" and 8 hex digits).
func NewID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail (Go 1.24+)
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
func (m *Manager) CreateVM(ctx context.Context, req api.VMRequest) (api.VM, error) {
	req.Default()
	if err := req.Validate(); err != nil {
		return api.VM{}, err
	}
	if _, err := m.st.Image(ctx, req.Package); err != nil {
		return api.VM{}, fmt.Errorf("package: %q: %w", req.Package, err)
	}
	vm := api.VM{
		ID: cmp.Or(req.ID, NewID()), VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, Package: req.Package,
		Settings: req.Settings, Health: req.Health, Created: m.cfg.Now().UTC(), Desired: api.VMRunning,
		VMStatus: api.VMStatus{State: api.VMStatePending},
	}
	var made *api.VM // the VM an earlier attempt of this request made
	_, err := m.st.ChangeVMs(ctx, func(nodes []api.Node, vms []api.VM) (store.VMChange, error) {
		made = nil
		if i := slices.IndexFunc(vms, func(v api.VM) bool { return v.ID == vm.ID }); i >= 0 {
			v := vms[i]
			if v.Package != req.Package || v.VCPUs != req.VCPUs || v.MemoryMB != req.MemoryMB {
				return store.VMChange{}, fmt.Errorf("vm %s: %w by a different VM (%d vCPUs, %d MiB, %s)", vm.ID, store.ErrExists, v.VCPUs, v.MemoryMB, v.Package)
			}
			made = &v
			return store.VMChange{}, nil
		}
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
	if made != nil {
		m.log.Info("vm create repeated: answered with the VM it made", "vm", made.ID, "node", made.Node)
		return *made, nil
	}
	m.log.Info("vm created", "vm", vm.ID, "node", vm.Node, "vcpus", vm.VCPUs, "memoryMB", vm.MemoryMB, "package", vm.Package)
	return vm, nil
}

// VMs lists every VM, with usage filled in.
func (m *Manager) VMs(ctx context.Context) ([]api.VM, error) {
	vms, err := m.st.VMs(ctx)
	if err != nil {
		return nil, err
	}
	for i := range vms {
		vms[i] = m.withLive(vms[i])
	}
	sort.Slice(vms, func(i, j int) bool {
		return vms[i].Created.Before(vms[j].Created) || vms[i].Created.Equal(vms[j].Created) && vms[i].ID < vms[j].ID
	})
	return vms, nil
}

// VM returns one VM.
func (m *Manager) VM(ctx context.Context, id string) (api.VM, error) {
	v, err := m.st.VM(ctx, id)
	if err != nil {
		return api.VM{}, err
	}
	return m.withLive(v), nil
}

func (m *Manager) withLive(v api.VM) api.VM {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.vmLive[v.ID]; ok {
		v.Usage, v.Observed = l.usage, l.observed
	}
	return v
}

// VMAction applies start, stop, reboot or delete to a VM's desired state.
func (m *Manager) VMAction(ctx context.Context, id string, action api.VMAction) (api.VM, error) {
	var out api.VM
	_, err := m.st.ChangeVMs(ctx, func(_ []api.Node, vms []api.VM) (store.VMChange, error) {
		for _, v := range vms {
			if v.ID != id {
				continue
			}
			if v.Desired == api.VMDeleted {
				return store.VMChange{}, fmt.Errorf("%w: vm %s is being deleted", node.ErrConflict, id)
			}
			switch action {
			case api.VMStart:
				v.Desired = api.VMRunning
			case api.VMStop:
				v.Desired = api.VMStopped
			case api.VMReboot:
				if v.Desired != api.VMRunning {
					return store.VMChange{}, fmt.Errorf("%w: vm %s is stopped; start it", node.ErrConflict, id)
				}
				v.RebootGen++
			case api.VMDelete:
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
		m.log.Info("vm request", "vm", id, "action", action)
	}
	return out, err
}

// GoalVMs lists node id's VMs for its goal document.
func (m *Manager) GoalVMs(ctx context.Context, id string) ([]api.GoalVM, error) {
	vms, err := m.st.VMsOn(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []api.GoalVM
	pkgs := map[string]*api.Manifest{} // a host runs many instances of few packages
	for _, v := range vms {
		g := api.GoalVM{ID: v.ID, VCPUs: v.VCPUs, MemoryMB: v.MemoryMB, Desired: v.Desired, RebootGen: v.RebootGen, Package: v.Package, Settings: v.Settings, Health: v.Health}
		img, seen := pkgs[v.Package]
		if !seen {
			if m, err := m.st.Image(ctx, v.Package); err == nil {
				img = &m
			}
			pkgs[v.Package] = img
		}
		if img != nil {
			g.PackageDigest, g.PackageURL = img.Digest, "/v1/images/"+img.Name+"/blob"
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ReportVMs applies a host's report of its guests: observed state to the
// store when it changed, usage to memory; deleted VMs the host no longer
// has are forgotten.
func (m *Manager) ReportVMs(ctx context.Context, id string, st api.Status) error {
	if len(st.VMs) == 0 && !st.VMsComplete {
		return nil
	}
	now := m.cfg.Now().UTC()
	m.mu.Lock()
	for _, g := range st.VMs {
		m.vmLive[g.ID] = &vmLive{usage: g.Usage, observed: now}
	}
	m.mu.Unlock()
	vms, err := m.st.VMsOn(ctx, id)
	if err != nil {
		return err
	}
	reported := map[string]api.VMStatus{}
	for _, g := range st.VMs {
		reported[g.ID] = g
	}
	var gone, changed []string
	for _, v := range vms {
		g, ok := reported[v.ID]
		switch {
		case !ok:
			if st.VMsComplete && v.Desired == api.VMDeleted {
				gone = append(gone, v.ID)
			}
		case !sameObserved(v.VMStatus, g):
			changed = append(changed, v.ID)
		}
	}
	// The host's news, in one write.
	err = m.st.UpdateVMStatuses(ctx, changed, func(v *api.VM) bool {
		g := reported[v.ID]
		if v.Node != id || sameObserved(v.VMStatus, g) {
			return false
		}
		if v.State != g.State {
			m.log.Info("vm state", "vm", v.ID, "node", id, "from", v.State, "to", g.State, "reason", g.Reason)
		}
		g.ID, g.Usage, g.Observed = "", nil, time.Time{}
		v.VMStatus = g
		return true
	})
	if err != nil {
		return err
	}
	if len(gone) > 0 {
		_, err := m.st.ChangeVMs(ctx, func(_ []api.Node, vms []api.VM) (store.VMChange, error) {
			var ch store.VMChange
			for _, v := range vms {
				if v.Desired == api.VMDeleted && slices.Contains(gone, v.ID) {
					ch.Delete = append(ch.Delete, v.ID)
				}
			}
			return ch, nil
		})
		if err != nil {
			return err
		}
		m.mu.Lock()
		for _, g := range gone {
			delete(m.vmLive, g)
		}
		m.mu.Unlock()
		m.log.Info("vms removed", "node", id, "vms", gone)
	}
	return nil
}

// sameObserved reports whether a report changes nothing worth a write.
func sameObserved(have, got api.VMStatus) bool {
	return have.State == got.State && have.Reason == got.Reason && have.Endpoint == got.Endpoint &&
		have.Restarts == got.Restarts && have.Rebooted == got.Rebooted && have.Boot == got.Boot &&
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
