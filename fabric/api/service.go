package api

import (
	"errors"
	"fmt"
	"time"
)

// Services: roles with instance counts that the fabric keeps running.
//
//	POST   /v1/services                 manifest (YAML, see fabric/service) → Service (201);
//	                                    400 with every wrong line and field, nothing applied
//	GET    /v1/services, /v1/services/{name} → []Service, Service
//	POST   /v1/services/{name}/scale    ScaleRequest → Service
//	DELETE /v1/services/{name}          → 204; its instances are deleted
//	POST   /v1/services/{name}/upgrade  UpgradeRequest → Service (202): the walk starts
//	POST   /v1/services/{name}/walk     → Service: a manual walk's next domain
//	GET    /v1/instances[?service=S]    → []Instance
//
// An instance is a VM with an owner (VM.Service, VM.Role): the VM API
// shows and acts on it like any other VM.

// RoleKind is what a role does: a web role has an endpoint, a worker none.
type RoleKind string

// Role kinds.
const (
	RoleWeb    RoleKind = "web"
	RoleWorker RoleKind = "worker"
)

// UpgradeMode says whether an upgrade walks the update domains by itself.
type UpgradeMode string

// Upgrade modes.
const (
	UpgradeAuto   UpgradeMode = "auto"
	UpgradeManual UpgradeMode = "manual"
)

// DefaultUpgradeTimeout is how long an update domain may take to come
// back Ready unless the manifest says.
const DefaultUpgradeTimeout = 10 * time.Minute

// WalkState is where an upgrade is.
type WalkState string

// Walk states.
const (
	WalkUpgrading  WalkState = "upgrading"    // a domain is being upgraded
	WalkWaiting    WalkState = "waiting"      // manual mode: waits for loom service walk
	WalkRollingBk  WalkState = "rolling back" // a domain failed: going back to the old version
	WalkDone       WalkState = "done"
	WalkRolledBack WalkState = "rolled back"
	WalkFailed     WalkState = "failed" // the rollback itself did not come back Ready
)

// Active says whether a walk is still going.
func (s WalkState) Active() bool {
	return s == WalkUpgrading || s == WalkWaiting || s == WalkRollingBk
}

// Walk is an upgrade walking the update domains, one at a time.
type Walk struct {
	State WalkState   `json:"state"`
	Mode  UpgradeMode `json:"mode"`
	// From are the roles before the upgrade (what a rollback restores).
	From []ServiceRole `json:"from"`
	// Order are the domains still to do, the first being done now; Done
	// those done, in order.
	Order []int `json:"order"`
	Done  []int `json:"done,omitempty"`
	// DomainStarted is when the first of Order started (zero: not yet).
	DomainStarted time.Time   `json:"domainStarted,omitzero"`
	Reason        string      `json:"reason,omitempty"`
	History       []WalkEvent `json:"history,omitempty"`
	// Seq counts the walk's changes (the controller's compare-and-swap).
	Seq int64 `json:"seq"`
}

// WalkEvent is one step of a walk's history.
type WalkEvent struct {
	Time   time.Time `json:"time"`
	Domain int       `json:"domain"`
	Event  string    `json:"event"` // started, done, failed, rollback, waiting
	Note   string    `json:"note,omitempty"`
}

// UpgradeRequest is the body of POST /v1/services/{name}/upgrade.
type UpgradeRequest struct {
	// Manifest is the new version (YAML) of the service.
	Manifest string `json:"manifest"`
	// Mode overrides the manifest's upgrade mode.
	Mode UpgradeMode `json:"mode,omitempty"`
}

// DefaultUpdateDomains is how many update domains a service has unless
// its manifest says.
const DefaultUpdateDomains = 5

// Limits on a service.
const (
	MaxUpdateDomains = 20
	MaxInstances     = 1000 // per role
	MaxRoles         = 16
)

// Service is a deployed service.
type Service struct {
	Name          string        `json:"name"`
	UpdateDomains int           `json:"updateDomains"`
	Upgrade       UpgradeMode   `json:"upgrade"`
	Roles         []ServiceRole `json:"roles"`
	// UpgradeTimeout is how long one update domain may take to come back
	// Ready before its upgrade is rolled back.
	UpgradeTimeout Duration  `json:"upgradeTimeout,omitempty"`
	Created        time.Time `json:"created,omitzero"`
	// Walk is the upgrade in progress, or the last one.
	Walk *Walk `json:"walk,omitempty"`
	// Endpoints are where the web roles are reached (as loomd serves
	// them; not stored).
	Endpoints []EndpointStatus `json:"endpoints,omitempty"`
}

// EndpointStatus is a web role's service endpoint as it is now.
type EndpointStatus struct {
	Role string `json:"role"`
	// Address is host:port, or Error says why there is none (the port
	// is taken, say).
	Address string `json:"address,omitempty"`
	Error   string `json:"error,omitempty"`
	// InRotation counts the instances taking connections.
	InRotation  int   `json:"inRotation"`
	Connections int64 `json:"connections"`
}

// ServiceRole is one role of a service and how many instances it wants.
type ServiceRole struct {
	Name      string            `json:"name"`
	Kind      RoleKind          `json:"kind"`
	Package   string            `json:"package"`
	Instances int               `json:"instances"`
	VCPUs     int               `json:"vcpus"`
	MemoryMB  int               `json:"memoryMB"`
	Settings  map[string]string `json:"settings,omitempty"`
	// Health overrides the package's health check.
	Health *HealthProbe `json:"health,omitempty"`
	// Endpoint is the service endpoint of a web role.
	Endpoint *Endpoint `json:"endpoint,omitempty"`
}

// Endpoint is where a web role is reached from outside.
type Endpoint struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"` // http or tcp
}

// Role finds a role by name.
func (s Service) Role(name string) (ServiceRole, bool) {
	for _, r := range s.Roles {
		if r.Name == name {
			return r, true
		}
	}
	return ServiceRole{}, false
}

// ScaleRequest is the body of POST /v1/services/{name}/scale.
type ScaleRequest struct {
	Role      string `json:"role"`
	Instances int    `json:"instances"`
}

// Validate checks a scale request's count.
func (r ScaleRequest) Validate() error {
	if r.Role == "" {
		return errors.New("role: required")
	}
	if r.Instances < 0 || r.Instances > MaxInstances {
		return fmt.Errorf("instances: %d: want 0 to %d", r.Instances, MaxInstances)
	}
	return nil
}

// InstanceState is an instance's state as the service model names it.
type InstanceState string

// Instance states.
const (
	InstancePending   InstanceState = "Pending"   // not placed (Reason says why) or not yet on its host
	InstanceStarting  InstanceState = "Starting"  // its guest boots, its role is not yet healthy
	InstanceReady     InstanceState = "Ready"     // its role is healthy
	InstanceUnhealthy InstanceState = "Unhealthy" // crashed; its host restarts it with backoff
	InstanceStopping  InstanceState = "Stopping"  // asked to stop or go, its host has not yet done it
	InstanceStopped   InstanceState = "Stopped"
	InstanceFailed    InstanceState = "Failed" // cannot be started (Reason)
)

// Instance is one instance of a service's role: a VM seen as the service
// model sees it.
type Instance struct {
	ID           string        `json:"id"` // the VM's
	Service      string        `json:"service"`
	Role         string        `json:"role"`
	Node         string        `json:"node,omitempty"`
	FaultDomain  string        `json:"faultDomain,omitempty"` // the node's rack
	UpdateDomain int           `json:"updateDomain"`
	State        InstanceState `json:"state"`
	Reason       string        `json:"reason,omitempty"`
	Endpoint     string        `json:"endpoint,omitempty"`
	Restarts     int           `json:"restarts,omitempty"`
}

// InstanceOf describes v as an instance; rack is its node's rack.
func InstanceOf(v VM, rack string) Instance {
	in := Instance{ID: v.ID, Service: v.Service, Role: v.Role, Node: v.Node, FaultDomain: rack, UpdateDomain: v.UpdateDomain,
		Reason: v.Reason, Endpoint: v.Endpoint, Restarts: v.Restarts}
	switch {
	case v.Desired == VMDeleted || (v.Desired == VMStopped && v.State != VMStateStopped):
		in.State = InstanceStopping
	case v.State == VMStateRunning && v.Rebooted < v.RebootGen:
		in.State, in.Reason = InstanceStarting, "restarting into its new version or on request"
	case v.State == VMStateRunning:
		in.State = InstanceReady
	case v.State == VMStateStarting:
		in.State = InstanceStarting
	case v.State == VMStateCrashed:
		in.State = InstanceUnhealthy
	case v.State == VMStateStopped:
		in.State = InstanceStopped
	case v.State == VMStateFailed:
		in.State = InstanceFailed
	default:
		in.State = InstancePending
	}
	return in
}

// Usage records, for billing:
//
//	GET /v1/usage[?since=RFC3339][&service=S] → []UsageRecord, oldest first

// UsageRecord is what one service role of one size used in one period:
// instance-seconds (instances Running, as their hosts report them) and
// the bytes their channels carried.
type UsageRecord struct {
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	Service         string    `json:"service"`
	Role            string    `json:"role"`
	VCPUs           int       `json:"vcpus"`
	MemoryMB        int       `json:"memoryMB"`
	InstanceSeconds float64   `json:"instanceSeconds"`
	ChannelBytes    uint64    `json:"channelBytes"`
}
