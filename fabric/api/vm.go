package api

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// VMs: guest virtual machines that host agents run with QEMU.
//
//	POST   /v1/vms                     VMRequest → VM (201); 409 with the reason
//	                                   when no Ready node has room for it
//	GET    /v1/vms, /v1/vms/{id}       → []VM, VM
//	POST   /v1/vms/{id}/start|stop|reboot → VM
//	DELETE /v1/vms/{id}                → 204 (the host stops and removes it)
//
// The desired state (Desired, RebootGen) is the operator's; the observed
// state (State, Reason, Endpoint, Usage, …) is what the host agent reports
// with its heartbeat (Status.VMs). Each node's goal document lists its VMs.

// VMDesired is the state the operator wants a VM in.
type VMDesired string

// VM desired states.
const (
	VMRunning VMDesired = "running"
	VMStopped VMDesired = "stopped"
	VMDeleted VMDesired = "deleted" // the host removes it, then the fabric forgets it
)

// VMState is a VM's observed state, as its host reports it.
type VMState string

// VM observed states.
const (
	VMStatePending  VMState = "Pending"  // placed, not yet seen on its host
	VMStateStarting VMState = "Starting" // QEMU runs, the guest agent has not said ready
	VMStateRunning  VMState = "Running"  // the guest agent and its role are healthy
	VMStateStopped  VMState = "Stopped"  // stopped on request
	VMStateCrashed  VMState = "Crashed"  // QEMU died or the guest panicked; restarting with backoff
	VMStateFailed   VMState = "Failed"   // cannot be started (Reason says why)
)

// VMAction is what the operator asks of a VM: POST /v1/vms/{id}/{action}.
type VMAction string

// VM actions.
const (
	VMStart  VMAction = "start"
	VMStop   VMAction = "stop"
	VMReboot VMAction = "reboot"
	VMDelete VMAction = "delete" // also DELETE /v1/vms/{id}
)

// VMRequest is the body of POST /v1/vms.
type VMRequest struct {
	// ID, if set, is the new VM's ("vm-" and 8 to 32 of 0-9 a-f), which
	// makes the create idempotent: sent again (its answer lost in a
	// failover), it answers with the VM the first one made instead of
	// making a second. The client sets one for every create.
	ID string `json:"id,omitempty"`
	// Node to place the VM on; "" picks a Ready node with room.
	Node     string `json:"node,omitempty"`
	VCPUs    int    `json:"vcpus"`
	MemoryMB int    `json:"memoryMB"`
	// Package names the role package: a stored image holding a tar with
	// loom-role.json (see images/roles).
	Package string `json:"package"`
	// Settings are handed to the role (its local endpoint serves them).
	Settings map[string]string `json:"settings,omitempty"`
	// Health overrides the package's health check (loom-role.json).
	Health *HealthProbe `json:"health,omitempty"`
}

// HealthProbe is how a guest agent decides its role is healthy: an HTTP
// GET of Path on the role's port every Interval answers 2xx within
// Timeout; Failures probes failed in a row make it unhealthy (out of its
// endpoint's rotation; the host restarts a role whose process exits).
type HealthProbe struct {
	Path     string   `json:"path"`
	Interval Duration `json:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
	Failures int      `json:"failures,omitempty"`
}

// Health probe defaults (a package's own check uses them too) and bounds.
const (
	DefaultProbeInterval = time.Second
	DefaultProbeTimeout  = 2 * time.Second
	DefaultProbeFailures = 1
	MaxProbeInterval     = 5 * time.Minute
	MaxProbeFailures     = 100
)

// Default fills what p leaves unset.
func (p *HealthProbe) Default() {
	if p.Interval == 0 {
		p.Interval = Duration(DefaultProbeInterval)
	}
	if p.Timeout == 0 {
		p.Timeout = Duration(DefaultProbeTimeout)
	}
	if p.Failures == 0 {
		p.Failures = DefaultProbeFailures
	}
}

// Validate checks a probe (after Default); each error names its field.
func (p HealthProbe) Validate() error {
	var errs []error
	if !strings.HasPrefix(p.Path, "/") || len(p.Path) > 1024 || strings.ContainsAny(p.Path, " \t\r\n") {
		errs = append(errs, fmt.Errorf("path: %q: want an HTTP path starting with /", p.Path))
	}
	if d := time.Duration(p.Interval); d < 100*time.Millisecond || d > MaxProbeInterval {
		errs = append(errs, fmt.Errorf("interval: %v: want 100ms to %v", d, MaxProbeInterval))
	}
	if d := time.Duration(p.Timeout); d < 100*time.Millisecond || d > MaxProbeInterval {
		errs = append(errs, fmt.Errorf("timeout: %v: want 100ms to %v", d, MaxProbeInterval))
	}
	if p.Failures < 1 || p.Failures > MaxProbeFailures {
		errs = append(errs, fmt.Errorf("failures: %d: want 1 to %d", p.Failures, MaxProbeFailures))
	}
	return errors.Join(errs...)
}

// VM is a guest as the fabric knows it.
type VM struct {
	ID       string            `json:"id"`
	Node     string            `json:"node"`
	VCPUs    int               `json:"vcpus"`
	MemoryMB int               `json:"memoryMB"`
	Package  string            `json:"package"`
	Settings map[string]string `json:"settings,omitempty"`
	Health   *HealthProbe      `json:"health,omitempty"`
	Created  time.Time         `json:"created"`

	// Service and Role own an instance of a service (see service.go);
	// both are empty for a VM made by hand. UpdateDomain is the
	// instance's update domain within its service.
	Service      string `json:"service,omitempty"`
	Role         string `json:"role,omitempty"`
	UpdateDomain int    `json:"updateDomain,omitempty"`

	// Desired is running, stopped or deleted.
	Desired VMDesired `json:"desired"`
	// RebootGen is bumped by each reboot request; the host reboots the
	// guest when it differs from what it last acted on.
	RebootGen int64 `json:"rebootGen,omitempty"`

	// Observed, from the host agent.
	VMStatus
}

// VMStatus is what a host agent reports of one guest.
type VMStatus struct {
	ID     string  `json:"id,omitempty"`
	State  VMState `json:"state,omitempty"`
	Reason string  `json:"reason,omitempty"`
	// Endpoint is host:port where the host carries TCP connections over the
	// channel to the role's port (web roles).
	Endpoint string `json:"endpoint,omitempty"`
	// Restarts counts restarts after crashes.
	Restarts int `json:"restarts,omitempty"`
	// Rebooted is the RebootGen the host last acted on.
	Rebooted int64 `json:"rebooted,omitempty"`
	// Interfaces the guest agent sees inside the guest.
	Interfaces []string `json:"interfaces,omitempty"`
	Usage      *Usage   `json:"usage,omitempty"`
	// Boot is how the guest last started: "snapshot" (resumed from its
	// host's saved state of its machine), "cold" (booted its kernel), or
	// "cold: " and why a snapshot was not used. A reboot since is cold.
	Boot string `json:"boot,omitempty"`
	// Observed is when the host agent last reported this guest.
	Observed time.Time `json:"observed,omitzero"`
}

// Usage is a guest's resource use, for metering.
type Usage struct {
	CPUSeconds   float64 `json:"cpuSeconds"`
	MemoryBytes  uint64  `json:"memoryBytes"`
	ChannelBytes uint64  `json:"channelBytes"`
}

// GoalVM is one guest in a host's goal document.
type GoalVM struct {
	ID        string            `json:"id"`
	VCPUs     int               `json:"vcpus"`
	MemoryMB  int               `json:"memoryMB"`
	Desired   VMDesired         `json:"desired"`
	RebootGen int64             `json:"rebootGen,omitempty"`
	Package   string            `json:"package"`
	Settings  map[string]string `json:"settings,omitempty"`
	Health    *HealthProbe      `json:"health,omitempty"`
	// PackageDigest is the sha256 of the package blob, served at PackageURL.
	PackageDigest string `json:"packageDigest"`
	PackageURL    string `json:"packageURL"`
}

// Limits on a VM request.
const (
	MaxVCPUs    = 64
	MinMemoryMB = 64
	MaxMemoryMB = 1 << 20
)

var settingKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`)

// VM sizes of a request that names none.
const (
	DefaultVCPUs    = 1
	DefaultMemoryMB = 256
)

var vmIDRE = regexp.MustCompile(`^vm-[0-9a-f]{8,32}$`)

// Default fills what r leaves unset: 1 vCPU, 256 MiB.
func (r *VMRequest) Default() {
	if r.VCPUs == 0 {
		r.VCPUs = DefaultVCPUs
	}
	if r.MemoryMB == 0 {
		r.MemoryMB = DefaultMemoryMB
	}
	if r.Health != nil {
		r.Health.Default()
	}
}

// Validate checks a VM request (after Default); the error names the bad
// field.
func (r VMRequest) Validate() error {
	var errs []error
	if r.VCPUs < 1 || r.VCPUs > MaxVCPUs {
		errs = append(errs, fmt.Errorf("vcpus: %d: want 1 to %d", r.VCPUs, MaxVCPUs))
	}
	if r.MemoryMB < MinMemoryMB || r.MemoryMB > MaxMemoryMB {
		errs = append(errs, fmt.Errorf("memoryMB: %d: want %d to %d", r.MemoryMB, MinMemoryMB, MaxMemoryMB))
	}
	if r.Package == "" {
		errs = append(errs, errors.New("package: required"))
	}
	if r.ID != "" && !vmIDRE.MatchString(r.ID) {
		errs = append(errs, fmt.Errorf("id: %q: want vm- and 8 to 32 of 0-9 a-f", r.ID))
	}
	if r.Health != nil {
		if err := r.Health.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("health: %w", err))
		}
	}
	if len(r.Settings) > 64 {
		errs = append(errs, fmt.Errorf("settings: %d entries, at most 64", len(r.Settings)))
	}
	for k, v := range r.Settings {
		if !settingKeyRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("settings: key %q: want a letter or _ then up to 63 of A-Z a-z 0-9 _ . -", k))
		}
		if len(v) > 4096 {
			errs = append(errs, fmt.Errorf("settings: %s: value longer than 4096 bytes", k))
		}
	}
	return errors.Join(errs...)
}

// HostReserveMB is the memory a host keeps for itself (and QEMU's own
// overhead) when VMs are placed on it.
const HostReserveMB = 512

// Capacity is what a node has left for VMs.
type Capacity struct {
	VCPUs    int `json:"vcpus"`
	MemoryMB int `json:"memoryMB"`
}

// Free is what node n has left once vms (those placed on it) are counted.
// vCPUs are the host's CPUs, not overcommitted, unless its agent offers
// more (GuestVCPUs); memory is never overcommitted.
func Free(n Node, vms []VM) Capacity {
	if n.Inventory == nil {
		return Capacity{}
	}
	c := Capacity{VCPUs: n.Inventory.CPU.Count, MemoryMB: int(n.Inventory.Memory>>20) - HostReserveMB}
	if n.GuestVCPUs > 0 {
		c.VCPUs = n.GuestVCPUs
	}
	for _, v := range vms {
		if v.Node == n.ID && v.Desired != VMDeleted {
			c.VCPUs -= v.VCPUs
			c.MemoryMB -= v.MemoryMB
		}
	}
	return c
}
