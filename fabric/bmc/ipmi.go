package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"
)

// IPMIPort is the RMCP+ port a BMC's address defaults to.
const IPMIPort = 623

// ipmiDo performs op over IPMI 2.0 (RMCP+, "lanplus") with go-ipmi: chassis
// status, chassis control, and the boot flags for a one-time PXE boot.
func ipmiDo(ctx context.Context, t Target, op Op) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	host, port, err := ipmiHostPort(t.Address)
	if err != nil {
		return "", fmt.Errorf("bmc %s: %w", t.Address, err)
	}
	c, err := client.NewClient(host, port, t.Username, t.Password)
	if err != nil {
		return "", fmt.Errorf("bmc %s: %w", t.Address, err)
	}
	// Suites 17 (SHA-256) and 3 (SHA-1), which every BMC of the last decade
	// offers, named outright: asking for the list costs a timeout on BMCs
	// that do not answer Get Channel Cipher Suites.
	c.WithTimeout(5*time.Second).WithRetry(2).WithCipherSuiteID(types.CipherSuiteID17, types.CipherSuiteID3)
	if err := c.Connect(ctx); err != nil {
		return "", ipmiWrap(t, "logging in", err)
	}
	defer func() { _ = c.Close(context.WithoutCancel(ctx)) }() // closing the session; the operation's result stands
	status := func() (bool, error) {
		st, err := c.GetChassisStatus(ctx)
		if err != nil {
			return false, ipmiWrap(t, "chassis status", err)
		}
		return st.PowerIsOn, nil
	}
	control := func(cc chassis.ChassisControl) error {
		if _, err := c.ChassisControl(ctx, cc); err != nil {
			return ipmiWrap(t, "chassis control "+string(op), err)
		}
		return nil
	}
	on, err := status()
	if err != nil {
		return "", err
	}
	switch op {
	case OpStatus:
		return powerText(on), nil
	case OpOn:
		if !on {
			err = control(chassis.ChassisControlPowerUp)
		}
	case OpOff:
		if on {
			err = control(chassis.ChassisControlPowerDown)
		}
	case OpCycle:
		if on {
			err = control(chassis.ChassisControlPowerCycle)
		} else {
			err = control(chassis.ChassisControlPowerUp)
		}
	case OpPXEOnce:
		if err := c.SetBootDevice(ctx, types.BootDeviceSelectorForcePXE, types.BIOSBootTypeLegacy, false); err != nil {
			return "", ipmiWrap(t, "setting the boot device", err)
		}
		return powerText(on), nil
	default:
		return "", fmt.Errorf("bmc: unknown operation %q", op)
	}
	if err != nil {
		return "", err
	}
	// The BMC acts on its own time; say what it reports a moment later.
	want := op != OpOff
	for i := 0; i < 20; i++ {
		if on, err = status(); err != nil || on == want {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		return "", err
	}
	return powerText(on), nil
}

func powerText(on bool) string {
	if on {
		return "On"
	}
	return "Off"
}

// ipmiHostPort splits "host[:port]" (an "ipmi://" prefix allowed),
// defaulting to port 623.
func ipmiHostPort(address string) (string, int, error) {
	a := strings.TrimPrefix(address, "ipmi://")
	host, p, err := net.SplitHostPort(a)
	if err != nil {
		return a, IPMIPort, nil // no port
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: bad port", address)
	}
	return host, port, nil
}

// ipmiWrap says what failed, with ErrAuth when the BMC refused the login
// (RAKP: unauthorized name, invalid integrity check, wrong password).
func ipmiWrap(t Target, what string, err error) error {
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"unauthorized name", "invalid integrity check", "rakp", "invalid session", "insufficient privilege", "password"} {
		if strings.Contains(msg, s) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("bmc %s (user %q): %s: %w (%v)", t.Address, t.Username, what, ErrAuth, err)
		}
	}
	return fmt.Errorf("bmc %s: %s: %w", t.Address, what, err)
}
