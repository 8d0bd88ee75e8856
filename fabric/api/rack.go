package api

// Rack enrollment: an operator imports a rack's servers before any of them
// has booted (their MACs, BMCs, rack and slot, profile), then powers the
// whole rack on through the BMCs and watches it image.
//
//	POST /v1/racks/import        body: the CSV (text/csv) → RackImport;
//	                             400 names the line and field that is
//	                             wrong, and nothing of the file is applied
//	GET  /v1/racks               → []RackSummary
//	POST /v1/racks/{rack}/power  PowerRequest → RackPower (one result per
//	                             node with a BMC; 200 even if some failed)
//	GET  /v1/nodes?rack=R        the rack's nodes

// RackEntry is one server of a rack import (one CSV line).
type RackEntry struct {
	// Line is the CSV line it came from (for errors).
	Line    int    `json:"line"`
	MAC     string `json:"mac"`
	Rack    string `json:"rack"`
	Slot    string `json:"slot,omitempty"`
	Profile string `json:"profile,omitempty"`
	BMC     *BMC   `json:"bmc,omitempty"`
}

// RackImport says what an import did.
type RackImport struct {
	// Created are nodes new to the fabric (phase Enrolled); Updated are
	// nodes that were known already (by MAC) and got the file's labels,
	// BMC and profile.
	Created []string `json:"created"`
	Updated []string `json:"updated"`
}

// RackSummary is a rack and how many of its nodes are in each phase.
type RackSummary struct {
	Rack   string        `json:"rack"`
	Nodes  int           `json:"nodes"`
	Phases map[Phase]int `json:"phases"`
}

// RackPower is the outcome of a power operation on a whole rack.
type RackPower struct {
	Nodes []RackPowerNode `json:"nodes"`
}

// RackPowerNode is one node's part of a RackPower.
type RackPowerNode struct {
	Node  string `json:"node"`
	Slot  string `json:"slot,omitempty"`
	Power string `json:"power,omitempty"`
	// Error is why the operation failed on this node ("" = it worked).
	Error string `json:"error,omitempty"`
}

// SlotLess orders nodes by rack, then slot, numerically where slots are
// numbered ("u2" before "u10"), then by id.
func SlotLess(a, b Node) bool {
	if a.Rack != b.Rack {
		return a.Rack < b.Rack
	}
	if a.Slot != b.Slot {
		na, nb := slotNum(a.Slot), slotNum(b.Slot)
		if na != nb {
			return na < nb
		}
		return a.Slot < b.Slot
	}
	return a.ID < b.ID
}

// slotNum is the first number in a slot name (a large one if none).
func slotNum(s string) int {
	n, digits := 0, false
	for _, c := range s {
		if c >= '0' && c <= '9' && n < 1<<20 {
			n, digits = n*10+int(c-'0'), true
		} else if digits {
			break
		}
	}
	if !digits {
		return 1 << 30
	}
	return n
}
