// Package api holds the wire types shared by loomd, loom-agent and the loom
// CLI. They are written once, here; nothing else declares a copy.
//
// # Agent ↔ fabric protocol (HTTP/JSON over TLS)
//
// The API is served over TLS only, with a certificate of the cluster's CA
// (package pki); agents learn the CA from the initramfs (package seed).
//
//	POST /v1/nodes/register        body Registration (with a CSR), auth:
//	                               enrollment token → 200 RegisterResponse
//	                               with the node's certificate. The same
//	                               machine (DMI UUID or any MAC) is always
//	                               the same node; mode "host" makes it Ready.
//	POST /v1/nodes/{id}/status     body Status, auth: the node's certificate
//	                               (mutual TLS; another node's is a 403).
//	                               The heartbeat; it carries the agent's
//	                               phase (Imaging+Progress, Imaged, Booting,
//	                               Failed+Reason) → 200 StatusResponse,
//	                               409 if the phase does not fit the node,
//	                               401 if the certificate is not the node's
//	                               current one (the agent then registers
//	                               again)
//	GET  /v1/nodes/{id}/goal?incarnation=N&wait=30s
//	                               auth: the node's certificate → 200 Goal if
//	                               its Incarnation is not N, else waits up to
//	                               wait (≤ 60s) for a change → 304
//	GET  /v1/images/{name}         Manifest (ranges included), auth:
//	                               enrollment or operator token, or a node's
//	                               certificate
//	GET  /v1/images/{name}/blob    the stored bytes, with Range support
//
// Operator calls carry the operator token that loomd writes to its data
// directory on first start:
//
//	GET    /v1/nodes[?rack=R], /v1/nodes/{id} → []Node, Node
//	DELETE /v1/nodes/{id}                   204: forgotten, its certificate refused
//	POST   /v1/nodes/{id}/provision         {"profile": P} → Node
//	POST   /v1/nodes/{id}/reprovision       → Node
//	POST   /v1/nodes/{id}/decommission      → Node (erase every disk, power off)
//	POST   /v1/images?name=N                the image as the body, or
//	                                        multipart "bmap" + "image" → Manifest
//	GET    /v1/images                       → []Manifest (without ranges)
//	DELETE /v1/images/{name}                204; 409 while a profile uses it
//	PUT    /v1/profiles/{name}              Profile → Profile (400 names the bad field)
//	GET    /v1/profiles[/{name}], DELETE /v1/profiles/{name}
//
// Every error is a JSON Error with a message and a non-2xx status. Bodies
// other than image uploads are limited to MaxBodyBytes.
//
// Netboot (no authentication; firmware cannot send any):
//
//	GET /boot/{mac}.ipxe           the iPXE script for that MAC
//	GET /boot/vmlinuz              the maintenance kernel
//	GET /boot/initramfs            the maintenance initramfs
package api

import "time"

// MaxBodyBytes bounds every request body loomd reads.
const MaxBodyBytes = 1 << 20

// Phase is where a node is in its life cycle. Documented in fabric/node.
type Phase string

// Node phases; the state machine is documented in fabric/node.
const (
	PhaseEnrolled       Phase = "Enrolled"       // imported with its rack, not seen yet
	PhaseDiscovered     Phase = "Discovered"     // its MAC was seen in DHCP
	PhaseRegistered     Phase = "Registered"     // its maintenance agent registered and heartbeats
	PhaseImaging        Phase = "Imaging"        // the agent is writing the host partition
	PhaseImaged         Phase = "Imaged"         // written and verified
	PhaseBooting        Phase = "Booting"        // handing over to the host OS
	PhaseReady          Phase = "Ready"          // the host agent registered and heartbeats
	PhaseFailed         Phase = "Failed"         // imaging failed; Reason says why
	PhaseUnreachable    Phase = "Unreachable"    // no heartbeat within the grace period
	PhaseWiping         Phase = "Wiping"         // decommissioning: the agent is erasing the disks
	PhaseDecommissioned Phase = "Decommissioned" // its disks are erased (Wiped says how); powered off
)

// Mode is the mode an agent runs in, as reported at registration.
type Mode string

// Agent modes.
const (
	ModeMaintenance Mode = "maintenance"
	ModeHost        Mode = "host"
)

// Node is a server known to the fabric.
type Node struct {
	ID    string `json:"id"`
	Phase Phase  `json:"phase"`
	// MAC is the boot MAC: the one seen in DHCP or the first the agent listed.
	MAC string `json:"mac"`
	// IP is the address the node last reported (or was leased).
	IP string `json:"ip,omitempty"`
	// Inventory is nil until the node registers.
	Inventory    *Inventory `json:"inventory,omitempty"`
	AgentVersion string     `json:"agentVersion,omitempty"`
	Created      time.Time  `json:"created"`
	// PhaseChanged is when Phase last changed.
	PhaseChanged time.Time `json:"phaseChanged"`
	// Reason explains a Failed phase.
	Reason string `json:"reason,omitempty"`
	// Mode the node's agent runs in (maintenance or host).
	Mode Mode `json:"mode,omitempty"`
	// Accel is how a host runs its guests (host mode only).
	Accel *Accel `json:"accel,omitempty"`
	// GuestVCPUs is what a host offers its guests when its agent says
	// (loom-agent --vcpus, loom.vcpus=): more than its CPUs overcommits
	// them. 0: its CPU count.
	GuestVCPUs int `json:"guestVCPUs,omitempty"`
	// BMC is how the fabric powers the node, if it can.
	BMC *BMC `json:"bmc,omitempty"`
	// Rack and Slot say where the server stands (from a rack import).
	Rack string `json:"rack,omitempty"`
	Slot string `json:"slot,omitempty"`
	// Profile to provision the node with ("" = none).
	Profile string `json:"profile,omitempty"`
	// Provision counts provisioning requests (provision, reprovision);
	// Imaged is the request last imaged successfully. The node is to be
	// imaged while they differ.
	Provision int64 `json:"provision,omitempty"`
	Imaged    int64 `json:"imaged,omitempty"`
	// Failed is the provisioning generation that failed (0 = none).
	Failed int64 `json:"failed,omitempty"`
	// Decommission asks for every disk to be erased and the node powered
	// off; Wiped records what was done.
	Decommission bool   `json:"decommission,omitempty"`
	Wiped        string `json:"wiped,omitempty"`
	// VMGen moves whenever the node's VMs change (so does its goal).
	VMGen int64 `json:"vmGen,omitempty"`
	// Progress of imaging (in memory, filled in on read).
	Progress *Progress `json:"progress,omitempty"`
	// History holds the node's last phase changes, oldest first.
	History []PhaseChange `json:"history,omitempty"`
	// LastSeen is the last heartbeat (or registration, or DHCP packet). It is
	// kept in memory by the leader and filled in on read.
	LastSeen time.Time `json:"lastSeen,omitzero"`
}

// PhaseChange is one entry of a node's history.
type PhaseChange struct {
	From   Phase     `json:"from,omitempty"`
	To     Phase     `json:"to"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// MaxHistory bounds Node.History.
const MaxHistory = 32

// SetPhase moves n to phase p at t, recording the change in its history.
// It is the only place a node's phase changes.
func (n *Node) SetPhase(p Phase, t time.Time, reason string) {
	if n.Phase == p {
		return
	}
	n.History = append(n.History, PhaseChange{From: n.Phase, To: p, At: t, Reason: reason})
	if len(n.History) > MaxHistory {
		n.History = n.History[len(n.History)-MaxHistory:]
	}
	n.Phase, n.PhaseChanged = p, t
}

// Inventory is what the maintenance agent finds in sysfs and procfs.
type Inventory struct {
	CPU    CPU    `json:"cpu"`
	Memory uint64 `json:"memoryBytes"`
	DMI    DMI    `json:"dmi"`
	NICs   []NIC  `json:"nics"`
	Disks  []Disk `json:"disks"`
}

// CPU describes the processors.
type CPU struct {
	Model string `json:"model"`
	Count int    `json:"count"`
}

// DMI is the SMBIOS identity of the machine.
type DMI struct {
	Vendor  string `json:"vendor,omitempty"`
	Product string `json:"product,omitempty"`
	Serial  string `json:"serial,omitempty"`
	UUID    string `json:"uuid,omitempty"`
}

// NIC is one network interface.
type NIC struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
	// SpeedMbps is 0 when unknown.
	SpeedMbps int  `json:"speedMbps,omitempty"`
	Link      bool `json:"link"`
}

// Disk is one block device.
type Disk struct {
	Name       string `json:"name"`
	SizeBytes  uint64 `json:"sizeBytes"`
	Model      string `json:"model,omitempty"`
	Serial     string `json:"serial,omitempty"`
	Rotational bool   `json:"rotational"`
	Removable  bool   `json:"removable"`
}

// Registration is the body of POST /v1/nodes/register.
type Registration struct {
	// Mode is the agent's mode; default maintenance.
	Mode Mode `json:"mode,omitempty"`
	// MAC is the interface the agent booted and reached the fabric on.
	MAC          string    `json:"mac"`
	IP           string    `json:"ip,omitempty"`
	AgentVersion string    `json:"agentVersion,omitempty"`
	Inventory    Inventory `json:"inventory"`
	// Accel is how a host agent runs its guests (host mode).
	Accel *Accel `json:"accel,omitempty"`
	// GuestVCPUs is the vCPUs a host offers its guests (host mode; 0: its
	// CPU count; at most MaxGuestVCPUs).
	GuestVCPUs int `json:"guestVCPUs,omitempty"`
	// CSR is a PEM certificate request for the key the agent will
	// authenticate with (required; see package pki).
	CSR string `json:"csr"`
}

// MaxGuestVCPUs bounds what a host may offer its guests.
const MaxGuestVCPUs = 1024

// Accel is how QEMU runs guests on a machine, as its probe decided.
type Accel struct {
	// Accel is "kvm" or "tcg".
	Accel string `json:"accel"`
	// CPU is QEMU's -cpu model ("host", "host,-arch-capabilities", "max").
	CPU string `json:"cpu"`
	// Reason says why: the probe's result, the QEMU error or "no console
	// output in 10s" of each model tried, or the operator's choice.
	Reason string `json:"reason,omitempty"`
}

// String is "kvm (cpu host): reason".
func (a Accel) String() string {
	s := a.Accel + " (cpu " + a.CPU + ")"
	if a.Reason != "" {
		s += ": " + a.Reason
	}
	return s
}

// RegisterResponse tells the agent who it is and how to call back.
type RegisterResponse struct {
	NodeID string `json:"nodeId"`
	// Certificate (PEM) is the node's client certificate, signed by the
	// fabric's CA for the CSR's key: its later calls authenticate with it
	// (mutual TLS). A new registration replaces (revokes) the last one.
	Certificate string `json:"certificate"`
	// HeartbeatInterval is how often the agent should post Status.
	HeartbeatInterval Duration `json:"heartbeatInterval"`
}

// Status is the body of POST /v1/nodes/{id}/status (the heartbeat). A
// heartbeat may carry a phase transition the agent made (Imaging, Imaged,
// Booting, Failed with Reason) for the goal of Incarnation/Provision.
type Status struct {
	IP     string `json:"ip,omitempty"`
	Phase  Phase  `json:"phase,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Cause sorts a Failed imaging's Reason into one of a few kinds
	// (CauseDisk, …), for counting.
	Cause     string    `json:"cause,omitempty"`
	Provision int64     `json:"provision,omitempty"`
	Progress  *Progress `json:"progress,omitempty"`
	// VMs (host mode) is every guest the host agent runs or knows of; with
	// VMsComplete the fabric may forget deleted VMs missing from it.
	VMs         []VMStatus `json:"vms,omitempty"`
	VMsComplete bool       `json:"vmsComplete,omitempty"`
}

// Causes of a failed imaging (Status.Cause); anything else counts as
// CauseOther.
const (
	CauseDisk     = "disk"     // choosing, erasing or partitioning the disk
	CauseTransfer = "transfer" // fetching the image (after the agent's retries)
	CauseVerify   = "verify"   // a digest or the read-back did not match
	CauseWrite    = "write"    // writing or syncing the partition
	CauseOther    = "other"
)

// FailureCause is c if it is one of the causes, else CauseOther.
func FailureCause(c string) string {
	switch c {
	case CauseDisk, CauseTransfer, CauseVerify, CauseWrite:
		return c
	}
	return CauseOther
}

// StatusResponse acknowledges a heartbeat.
type StatusResponse struct {
	HeartbeatInterval Duration `json:"heartbeatInterval"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Message string `json:"error"`
}

// Lease is a DHCP lease as the store keeps it.
type Lease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Expires  time.Time `json:"expires"`
	Hostname string    `json:"hostname,omitempty"`
	// Relay says which relay the request came through, if any.
	Relay *LeaseRelay `json:"relay,omitempty"`
}

// LeaseRelay is the relay a lease was given through: its address on the
// client's subnet (giaddr) and its relay agent information (option 82).
// The IDs are text where printable, else hex.
type LeaseRelay struct {
	GIAddr    string `json:"giaddr"`
	CircuitID string `json:"circuit_id,omitempty"`
	RemoteID  string `json:"remote_id,omitempty"`
}

// Duration is a time.Duration that travels as a string ("10s").
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
