// Package node keeps the node life cycle.
//
// # State machine (this far)
//
//	(DHCP packet from an unknown netboot MAC) → Discovered
//	Enrolled (rack import, rack.go) --DHCP packet--> Discovered
//	Discovered  --maintenance agent registers-->  Registered
//	any         --host agent registers-->         Ready
//	Registered, Imaging, Imaged, Ready
//	            --no heartbeat for Grace-->       Unreachable
//	Booting     --no heartbeat for BootGrace-->   Unreachable (a host OS
//	            boots silently between the kexec and its agent's registration)
//	Unreachable --heartbeat-->                    Registered (maintenance) or Ready (host)
//
// Provisioning (Imaging, Imaged, Booting, Failed) is in provision.go.
//
// Registration is idempotent: a machine is the same node when its DMI UUID
// or any of its MACs is already known. Heartbeats live in the leader's
// memory; only phase transitions are written to the store. After a loomd
// restart every Registered node gets a fresh Grace before it can be marked
// Unreachable.
package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/pki"
	"github.com/loomfabric/loom/fabric/store"
)

// ErrUnauthorized means a node credential did not match.
var ErrUnauthorized = errors.New("unknown node or wrong credential")

// Store is what the registry needs of the store; *store.Store has it.
type Store interface {
	Nodes(ctx context.Context) ([]api.Node, error)
	Node(ctx context.Context, id string) (api.Node, error)
	NodeIDByMAC(ctx context.Context, mac string) (string, error)
	NodeIDsByMAC(ctx context.Context, macs []string) (map[string]string, error)
	NodeIDByUUID(ctx context.Context, uuid string) (string, error)
	CreateNode(ctx context.Context, n api.Node, macs []string, uuid string) error
	WriteNodes(ctx context.Context, ws []store.NodeWrite) error
	ClaimIndexes(ctx context.Context, id string, macs []string, uuid string) error
	UpdateNode(ctx context.Context, id string, fn func(*api.Node) error) (api.Node, error)
	SetCredential(ctx context.Context, id, hash string) error
	Credential(ctx context.Context, id string) (string, error)
	DeleteNode(ctx context.Context, id string, macs []string, uuid string) error

	// Provisioning: goals follow node revisions; profiles and images say
	// what to lay down.
	NodeRev(ctx context.Context, id string) (api.Node, int64, error)
	WaitNode(ctx context.Context, id string, rev int64) error
	Profile(ctx context.Context, name string) (api.Profile, error)
	Image(ctx context.Context, name string) (api.Manifest, error)
	// Power: the BMC credentials nodes refer to.
	BMCCredential(ctx context.Context, name string) (api.Credential, error)
}

// Guests is what a host node's goal and reports need of its VMs (package
// vms has it). Without one, hosts run no guests.
type Guests interface {
	// GoalVMs lists the VMs node id should run, for its goal.
	GoalVMs(ctx context.Context, id string) ([]api.GoalVM, error)
	// ReportVMs takes what host id reports of its guests.
	ReportVMs(ctx context.Context, id string, st api.Status) error
}

// Config tunes the registry.
type Config struct {
	Store Store
	// Guests are the VMs on host nodes. Default: none.
	Guests Guests
	// HeartbeatInterval is what agents are told. Default 5s.
	HeartbeatInterval time.Duration
	// Grace is how long without a heartbeat before Unreachable. Default
	// 4×HeartbeatInterval.
	Grace time.Duration
	// BootGrace is how long a Booting node (handed over to its host OS,
	// whose agent has yet to register) may be silent. Default 10 minutes,
	// never less than Grace.
	BootGrace time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// DefaultProfile, if set, provisions every newly registered node with it.
	DefaultProfile string
	// Power performs BMC operations. Default bmc.Do.
	Power PowerFunc
	// CA signs registered nodes' certificates. Required to register.
	CA *pki.CA
	// Observer, if set, is told how each imaging ended (package metrics
	// counts them).
	Observer Observer
}

// Observer is told of imagings as they end.
type Observer interface {
	// Imaged: a node wrote and verified bytes of image data, in took
	// (from its first Imaging report).
	Imaged(bytes uint64, took time.Duration)
	// ImagingFailed: a node's imaging failed, for cause (api.FailureCause).
	ImagingFailed(cause string)
}

// Registry is the node life cycle over the store.
type Registry struct {
	cfg Config
	log *slog.Logger

	regMu sync.Mutex     // serialises registrations and discoveries
	wg    sync.WaitGroup // power operations started by the monitor

	mu       sync.Mutex
	lastSeen map[string]time.Time     // node id → last heartbeat
	progress map[string]*api.Progress // node id → imaging progress
	known    map[string]bool          // MACs known to have a node
	started  time.Time
}

// New returns a registry.
func New(cfg Config, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.Grace == 0 {
		cfg.Grace = 4 * cfg.HeartbeatInterval
	}
	if cfg.BootGrace == 0 {
		cfg.BootGrace = 10 * time.Minute
	}
	cfg.BootGrace = max(cfg.BootGrace, cfg.Grace)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Registry{cfg: cfg, log: log, lastSeen: map[string]time.Time{}, progress: map[string]*api.Progress{}, known: map[string]bool{}, started: cfg.Now()}
}

// HeartbeatInterval is what agents are told.
func (r *Registry) HeartbeatInterval() time.Duration { return r.cfg.HeartbeatInterval }

func newID() string {
	b := make([]byte, 5)
	rand.Read(b)
	return "n-" + hex.EncodeToString(b)
}

// NormalizeMAC returns the canonical form of a MAC, or an error.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("invalid MAC address %q", s)
	}
	return hw.String(), nil
}

// Discovered records a MAC seen in DHCP as a Discovered node, once.
func (r *Registry) Discovered(ctx context.Context, mac string) error {
	return r.DiscoveredMany(ctx, []string{mac})
}

// DiscoveredMany records MACs seen in DHCP as Discovered nodes, once each:
// the new ones in one store transaction (a busy netboot network brings
// many at once). A MAC with a node already is left alone, except that an
// Enrolled node (rack import) is now Discovered.
func (r *Registry) DiscoveredMany(ctx context.Context, macs []string) error {
	r.mu.Lock()
	var todo []string
	for _, m := range macs {
		if !r.known[m] && !slices.Contains(todo, m) {
			todo = append(todo, m)
		}
	}
	r.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	r.regMu.Lock()
	defer r.regMu.Unlock()
	now := r.cfg.Now()
	owners, err := r.cfg.Store.NodeIDsByMAC(ctx, todo)
	if err != nil {
		return err
	}
	var writes []store.NodeWrite
	for _, mac := range todo {
		if id, ok := owners[mac]; ok {
			if err := r.seenEnrolled(ctx, id); err != nil {
				return err
			}
			r.markKnown(mac)
			continue
		}
		n := api.Node{ID: newID(), MAC: mac, Created: now}
		n.SetPhase(api.PhaseDiscovered, now, "")
		writes = append(writes, store.NodeWrite{Node: n, MACs: []string{mac}})
	}
	if len(writes) == 0 {
		return nil
	}
	if len(writes) > 1 {
		err := r.cfg.Store.WriteNodes(ctx, writes)
		if err == nil {
			for _, w := range writes {
				r.markKnown(w.Node.MAC)
				r.log.Info("node discovered", "node", w.Node.ID, "mac", w.Node.MAC)
			}
			return nil
		}
		if !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("recording %d discovered nodes: %w", len(writes), err)
		}
		// Someone claimed one of the MACs meanwhile: one by one below.
	}
	for _, w := range writes {
		err := r.cfg.Store.CreateNode(ctx, w.Node, w.MACs, "")
		if err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("recording discovered %s: %w", w.Node.MAC, err)
		}
		r.markKnown(w.Node.MAC)
		if err == nil {
			r.log.Info("node discovered", "node", w.Node.ID, "mac", w.Node.MAC)
		}
	}
	return nil
}

// seenEnrolled moves a node known from a rack import to Discovered.
func (r *Registry) seenEnrolled(ctx context.Context, id string) error {
	n, err := r.cfg.Store.Node(ctx, id)
	if err != nil || n.Phase != api.PhaseEnrolled {
		return nil
	}
	_, err = r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
		if n.Phase == api.PhaseEnrolled {
			n.SetPhase(api.PhaseDiscovered, r.cfg.Now(), "seen in DHCP")
		}
		return nil
	})
	return err
}

func (r *Registry) markKnown(macs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range macs {
		r.known[m] = true
	}
}

// Validate checks a registration body and normalises its MACs.
func Validate(reg *api.Registration) error {
	mac, err := NormalizeMAC(reg.MAC)
	if err != nil {
		return fmt.Errorf("mac: %w", err)
	}
	reg.MAC = mac
	for i := range reg.Inventory.NICs {
		m, err := NormalizeMAC(reg.Inventory.NICs[i].MAC)
		if err != nil {
			return fmt.Errorf("inventory.nics[%d].mac: %w", i, err)
		}
		reg.Inventory.NICs[i].MAC = m
	}
	if reg.IP != "" && net.ParseIP(reg.IP) == nil {
		return fmt.Errorf("ip: invalid address %q", reg.IP)
	}
	if reg.Mode != "" && reg.Mode != api.ModeMaintenance && reg.Mode != api.ModeHost {
		return fmt.Errorf("mode: %q: want %s or %s", reg.Mode, api.ModeMaintenance, api.ModeHost)
	}
	if a := reg.Accel; a != nil {
		switch {
		case a.Accel != "kvm" && a.Accel != "tcg":
			return fmt.Errorf("accel.accel: %q: want kvm or tcg", a.Accel)
		case a.CPU == "" || len(a.CPU) > 128:
			return fmt.Errorf("accel.cpu: want a QEMU CPU model of 1 to 128 bytes, got %d", len(a.CPU))
		case len(a.Reason) > 4096:
			return fmt.Errorf("accel.reason: %d bytes, at most 4096", len(a.Reason))
		}
	}
	if reg.Inventory.CPU.Count < 0 {
		return fmt.Errorf("inventory.cpu.count: %d is negative", reg.Inventory.CPU.Count)
	}
	if len(reg.Inventory.NICs) > 256 || len(reg.Inventory.Disks) > 1024 {
		return errors.New("inventory: too many NICs or disks")
	}
	if _, err := pki.CheckCSR(reg.CSR); err != nil {
		return err
	}
	return nil
}

// Register records a registration and returns the node and its new
// certificate (PEM), which replaces any it had. The same machine always
// maps to the same node.
func (r *Registry) Register(ctx context.Context, reg api.Registration) (api.Node, string, error) {
	if err := Validate(&reg); err != nil {
		return api.Node{}, "", err
	}
	macs := []string{reg.MAC}
	for _, nic := range reg.Inventory.NICs {
		if nic.MAC != reg.MAC {
			macs = append(macs, nic.MAC)
		}
	}
	uuid := identityUUID(reg.Inventory.DMI.UUID)
	r.regMu.Lock()
	defer r.regMu.Unlock()

	id, err := r.find(ctx, uuid, macs)
	if err != nil {
		return api.Node{}, "", err
	}
	now := r.cfg.Now()
	var n api.Node
	if id == "" {
		n = api.Node{ID: newID(), MAC: reg.MAC, Created: now}
		apply(&n, reg, now, r.cfg.DefaultProfile)
		if err := r.cfg.Store.CreateNode(ctx, n, macs, uuid); err != nil {
			return api.Node{}, "", err
		}
	} else {
		n, err = r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error { apply(n, reg, now, r.cfg.DefaultProfile); return nil })
		if err != nil {
			return api.Node{}, "", err
		}
		if err := r.cfg.Store.ClaimIndexes(ctx, id, macs, uuid); err != nil {
			return api.Node{}, "", err
		}
	}
	if r.cfg.CA == nil {
		return api.Node{}, "", errors.New("this fabric has no CA to sign node certificates with")
	}
	cert, serial, err := r.cfg.CA.SignNode(reg.CSR, n.ID)
	if err != nil {
		return api.Node{}, "", err
	}
	if err := r.cfg.Store.SetCredential(ctx, n.ID, serial); err != nil {
		return api.Node{}, "", err
	}
	r.markKnown(macs...)
	r.touch(n.ID, now)
	n.LastSeen = now
	r.log.Info("node registered", "node", n.ID, "mac", reg.MAC, "ip", reg.IP, "cpus", reg.Inventory.CPU.Count, "memory", reg.Inventory.Memory)
	return n, cert, nil
}

// find looks a machine up by UUID, then by each MAC. "" means new.
func (r *Registry) find(ctx context.Context, uuid string, macs []string) (string, error) {
	if uuid != "" {
		id, err := r.cfg.Store.NodeIDByUUID(ctx, uuid)
		if err == nil {
			return id, nil
		}
		if !store.IsNotFound(err) {
			return "", err
		}
	}
	for _, m := range macs {
		id, err := r.cfg.Store.NodeIDByMAC(ctx, m)
		if err == nil {
			return id, nil
		}
		if !store.IsNotFound(err) {
			return "", err
		}
	}
	return "", nil
}

// identityUUID returns a DMI UUID fit to identify a machine, or "" for the
// placeholders firmware leaves (QEMU without -uuid reports all zeros, some
// boards all F), which many machines share.
func identityUUID(u string) string {
	u = strings.ToLower(strings.TrimSpace(u))
	stripped := strings.Trim(strings.ReplaceAll(u, "-", ""), "0")
	if stripped == "" || strings.Trim(stripped, "f") == "" {
		return ""
	}
	return u
}

func apply(n *api.Node, reg api.Registration, now time.Time, defaultProfile string) {
	inv := reg.Inventory
	n.Inventory = &inv
	n.AgentVersion = reg.AgentVersion
	n.Mode = reg.Mode
	if n.Mode == "" {
		n.Mode = api.ModeMaintenance
	}
	n.Accel = reg.Accel
	n.GuestVCPUs = 0
	if n.Mode == api.ModeHost && reg.GuestVCPUs > 0 && reg.GuestVCPUs <= api.MaxGuestVCPUs {
		n.GuestVCPUs = reg.GuestVCPUs
	}
	if reg.IP != "" {
		n.IP = reg.IP
	}
	phase := api.PhaseRegistered
	switch {
	case n.Mode == api.ModeHost:
		phase = api.PhaseReady
	case n.Phase == api.PhaseFailed && n.Failed == n.Provision:
		phase = api.PhaseFailed // stays failed until reprovisioned
	}
	n.SetPhase(phase, now, "")
	if defaultProfile != "" && n.Provision == 0 && n.Mode == api.ModeMaintenance {
		n.Profile = defaultProfile
		n.Provision = 1
	}
}

// Authenticate checks serial is node id's current certificate (the one
// its last registration got): a node deleted or registered anew since has
// its older certificates refused.
func (r *Registry) Authenticate(ctx context.Context, id, serial string) error {
	want, err := r.cfg.Store.Credential(ctx, id)
	if store.IsNotFound(err) {
		return ErrUnauthorized
	}
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(serial)) != 1 {
		if store.IsRelaxed(ctx) { // a certificate issued a moment ago
			return r.Authenticate(store.Strict(ctx), id, serial)
		}
		return ErrUnauthorized
	}
	return nil
}

// Delete forgets a node: its record, its MACs and UUID (a later boot of
// the machine is a new node) and its certificate, refused from then on.
// A host that still has VMs is not deleted (ErrConflict).
func (r *Registry) Delete(ctx context.Context, id string) error {
	n, err := r.cfg.Store.Node(ctx, id)
	if err != nil {
		return err
	}
	if r.cfg.Guests != nil {
		vms, err := r.cfg.Guests.GoalVMs(ctx, id)
		if err != nil {
			return err
		}
		if len(vms) > 0 {
			return fmt.Errorf("%w: node %s runs %d VMs (%s first): delete them or let their services move them", ErrConflict, id, len(vms), vms[0].ID)
		}
	}
	macs := []string{n.MAC}
	uuid := ""
	if n.Inventory != nil {
		for _, nic := range n.Inventory.NICs {
			macs = append(macs, nic.MAC)
		}
		uuid = identityUUID(n.Inventory.DMI.UUID)
	}
	r.regMu.Lock()
	defer r.regMu.Unlock()
	if err := r.cfg.Store.DeleteNode(ctx, id, macs, uuid); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.lastSeen, id)
	delete(r.progress, id)
	for _, m := range macs {
		delete(r.known, m)
	}
	r.mu.Unlock()
	r.log.Info("node deleted; its certificate is refused from now on", "node", id, "mac", n.MAC)
	return nil
}

// List returns every node, sorted by id.
func (r *Registry) List(ctx context.Context) ([]api.Node, error) {
	nodes, err := r.cfg.Store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	for i := range nodes {
		nodes[i] = r.withLastSeen(nodes[i])
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	return nodes, nil
}

// Get returns one node.
func (r *Registry) Get(ctx context.Context, id string) (api.Node, error) {
	n, err := r.cfg.Store.Node(ctx, id)
	if err != nil {
		return api.Node{}, err
	}
	return r.withLastSeen(n), nil
}
