package api

import (
	"fmt"
	"strings"
	"time"
)

// BMC protocols.
const (
	BMCRedfish = "redfish"
	BMCIPMI    = "ipmi" // IPMI 2.0 over the LAN (RMCP+); address host[:623]
)

// BMC is how the fabric reaches a node's baseboard management controller.
// The login is a named credential (see Credential): no password is ever
// kept in, or shown with, a node.
type BMC struct {
	// Protocol is "redfish" or "ipmi".
	Protocol string `json:"protocol"`
	// Address is the BMC's URL or host[:port] (https by default).
	Address string `json:"address"`
	// Credential names the stored credential to log in with.
	Credential string `json:"credential"`
	// Insecure skips TLS certificate checks (BMCs with self-signed ones).
	Insecure bool `json:"insecure,omitempty"`
	// Power is the power state last read ("On", "Off") and when.
	Power        string    `json:"power,omitempty"`
	PowerChecked time.Time `json:"powerChecked,omitzero"`
	// LastAction is the last power operation Loom did, when and why.
	LastAction string `json:"lastAction,omitempty"`
}

// Default fills what b leaves unset: Redfish.
func (b *BMC) Default() {
	if b.Protocol == "" {
		b.Protocol = BMCRedfish
	}
}

// Validate checks a BMC's settings (after Default), naming the field that
// is wrong.
func (b BMC) Validate() error {
	if b.Protocol != BMCRedfish && b.Protocol != BMCIPMI {
		return fmt.Errorf("bmc.protocol %q: want %s or %s", b.Protocol, BMCRedfish, BMCIPMI)
	}
	if b.Address == "" || strings.ContainsAny(b.Address, " \t\n") {
		return fmt.Errorf("bmc.address %q: want a URL or host[:port]", b.Address)
	}
	if !profileNameRE.MatchString(b.Credential) {
		return fmt.Errorf("bmc.credential %q: want a name of lower-case letters, digits, '.', '_' and '-'", b.Credential)
	}
	return nil
}

// Credential is a login for BMCs, stored by name. The password goes in
// and never comes out of the API.
type Credential struct {
	Name     string `json:"name"`
	Username string `json:"username"`
	Password string `json:"password,omitempty"`
}

// PowerRequest asks for a power operation: status, on, off, cycle or
// pxe-once.
type PowerRequest struct {
	Op string `json:"op"`
}

// PowerResult is the node's power state after an operation.
type PowerResult struct {
	Power string `json:"power"`
}

// Validate checks a credential, naming the field that is wrong.
func (c Credential) Validate() error {
	if !profileNameRE.MatchString(c.Name) {
		return fmt.Errorf("credential name %q: want lower-case letters, digits, '.', '_' and '-'", c.Name)
	}
	if c.Username == "" {
		return fmt.Errorf("credential %s: username is required", c.Name)
	}
	return nil
}
