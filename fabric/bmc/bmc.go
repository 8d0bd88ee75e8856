// Package bmc powers servers through their baseboard management controller
// (BMC): power on, off, cycle, status, and a one-time network boot on the
// next start. It speaks Redfish (DMTF's REST API, through gofish) and IPMI
// 2.0 over the LAN (RMCP+, through go-ipmi).
//
// Every call connects, acts and is done: a BMC is a small, slow computer
// that many tools talk to, and holding sessions open on it helps nobody.
// Credentials travel with HTTP basic authentication, which every Redfish
// service accepts; use https where the BMC offers it.
package bmc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/common"
	"github.com/stmcginnis/gofish/redfish"

	"github.com/loomfabric/loom/fabric/api"
)

// Op is something done to a server's power.
type Op string

const (
	OpStatus  Op = "status"   // read the power state
	OpOn      Op = "on"       // power on
	OpOff     Op = "off"      // power off at once (no shutdown)
	OpCycle   Op = "cycle"    // off and on again (on, if it was off)
	OpPXEOnce Op = "pxe-once" // boot from the network on the next start only
)

// ParseOp checks an operation's name.
func ParseOp(s string) (Op, error) {
	switch op := Op(s); op {
	case OpStatus, OpOn, OpOff, OpCycle, OpPXEOnce:
		return op, nil
	}
	return "", fmt.Errorf("power operation %q: want status, on, off, cycle or pxe-once", s)
}

// ErrAuth means the BMC refused the credentials.
var ErrAuth = errors.New("the BMC refused the credentials")

// Target is one BMC and how to log in to it.
type Target struct {
	api.BMC
	Username, Password string
}

// Do performs op on the target's server and returns its power state
// afterwards ("On", "Off", … as the BMC says it).
func Do(ctx context.Context, t Target, op Op) (string, error) {
	switch t.Protocol {
	case api.BMCRedfish:
		return redfishDo(ctx, t, op)
	case api.BMCIPMI:
		return ipmiDo(ctx, t, op)
	}
	return "", fmt.Errorf("bmc: protocol %q: want %s or %s", t.Protocol, api.BMCRedfish, api.BMCIPMI)
}

// Endpoint is the Redfish service root's base URL for an address: a URL
// as given, a bare host[:port] as https.
func Endpoint(address string) string {
	if strings.HasPrefix(address, "http://") || strings.HasPrefix(address, "https://") {
		return strings.TrimRight(address, "/")
	}
	return "https://" + address
}

func redfishDo(ctx context.Context, t Target, op Op) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	c, err := gofish.ConnectContext(ctx, gofish.ClientConfig{
		Endpoint: Endpoint(t.Address), Username: t.Username, Password: t.Password,
		Insecure: t.Insecure, BasicAuth: true,
	})
	if err != nil {
		return "", wrap(t, "connecting", err)
	}
	defer c.Logout()
	// Log in with a plain GET first: gofish's collection reader turns a
	// refused login into text, this keeps the status code.
	resp, err := c.Get("/redfish/v1/Systems")
	if err != nil {
		return "", wrap(t, "logging in", err)
	}
	_ = resp.Body.Close() // the login answer is not read
	systems, err := c.Service.Systems()
	if err != nil {
		return "", wrap(t, "listing systems", err)
	}
	if len(systems) == 0 {
		return "", fmt.Errorf("bmc %s: the Redfish service has no computer system", t.Address)
	}
	sys := systems[0]
	switch op {
	case OpStatus:
	case OpOn:
		err = sys.Reset(redfish.OnResetType)
	case OpOff:
		err = sys.Reset(redfish.ForceOffResetType)
	case OpCycle:
		switch {
		case sys.PowerState == redfish.OffPowerState:
			err = sys.Reset(redfish.OnResetType)
		case slices.Contains(sys.SupportedResetTypes, redfish.PowerCycleResetType):
			err = sys.Reset(redfish.PowerCycleResetType)
		default:
			err = sys.Reset(redfish.ForceRestartResetType)
		}
	case OpPXEOnce:
		err = sys.SetBoot(redfish.Boot{
			BootSourceOverrideTarget:  redfish.PxeBootSourceOverrideTarget,
			BootSourceOverrideEnabled: redfish.OnceBootSourceOverrideEnabled,
		})
	default:
		return "", fmt.Errorf("bmc: unknown operation %q", op)
	}
	if err != nil {
		return "", wrap(t, string(op), err)
	}
	if op == OpStatus {
		return string(sys.PowerState), nil
	}
	now, err := redfish.GetComputerSystem(c, sys.ODataID)
	if err != nil {
		return "", wrap(t, "reading the power state", err)
	}
	return string(now.PowerState), nil
}

// wrap turns a Redfish error into one that says what failed, with ErrAuth
// for refused credentials.
func wrap(t Target, what string, err error) error {
	var re *common.Error
	if errors.As(err, &re) && (re.HTTPReturnedStatusCode == http.StatusUnauthorized || re.HTTPReturnedStatusCode == http.StatusForbidden) {
		return fmt.Errorf("bmc %s (user %q): %s: %w (HTTP %d)", t.Address, t.Username, what, ErrAuth, re.HTTPReturnedStatusCode)
	}
	return fmt.Errorf("bmc %s: %s: %w", t.Address, what, err)
}
