package api

import "time"

// Event is one thing that happened in the fabric: a node's phase or a
// VM's state changed, an object came or went, or an operator acted.
//
//	GET /v1/events[?object=ID][&since=RFC3339][&limit=N][&follow=true]
//	    → []Event, oldest first (viewer); with follow, newline-separated
//	    Events as they are recorded, the stored ones first, until the
//	    client goes away.
type Event struct {
	Time time.Time `json:"time"`
	// Kind is what Object is: "node", "vm", "action" (an operator's
	// write through the API; Object is what it named) or "gap" (events
	// were lost: the history could not be followed).
	Kind   string `json:"kind"`
	Object string `json:"object,omitempty"`
	// From and To are the phase or state before and after ("" before a
	// new object; "deleted" after one removed). An action's To is its
	// HTTP status.
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Actor is who moved it: an operator token's name, "agent" (the
	// node's agent reported it), "host <node>" (a VM's host reported
	// it), "dhcp" or "fabric" (loomd itself).
	Actor string `json:"actor,omitempty"`
}

// Event kinds.
const (
	EventNode   = "node"
	EventVM     = "vm"
	EventAction = "action"
	EventGap    = "gap"
)
