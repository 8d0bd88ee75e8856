// Package maintenance is loom-agent's maintenance mode: the uinit of the
// maintenance OS. It never returns while its context lives.
//
// Steps, each announced on the console with a marker line
// "LOOM-MARK <step> key=value…" that tests and operators wait for:
//
//	cmdline     loom.fabric / loom.token read from /proc/cmdline
//	network     links up, DHCP lease applied            (retried with backoff)
//	inventory   hardware inventory taken
//	registered  POST /v1/nodes/register succeeded        (retried with backoff)
//	heartbeat   first heartbeat acknowledged; then one every interval. A 401
//	            (loomd forgot the node) sends the agent back to register.
package maintenance

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/loomfabric/loom/agent/cmdline"
	"github.com/loomfabric/loom/agent/inventory"
	"github.com/loomfabric/loom/agent/netconf"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// Version is the agent version reported at registration.
var Version = "dev"

// Config tunes the maintenance agent.
type Config struct {
	// Cmdline is the kernel command line. Default: read /proc/cmdline.
	Cmdline string
	// Root is where sysfs and procfs are found. Default "/".
	Root string
	// Console receives the marker lines. Default os.Stderr.
	Console io.Writer
	// MaxBackoff caps retry delays. Default 30s.
	MaxBackoff time.Duration
}

// Mark prints a marker line.
func Mark(w io.Writer, step string, kv ...any) {
	s := "LOOM-MARK " + step
	for i := 0; i+1 < len(kv); i += 2 {
		s += fmt.Sprintf(" %v=%v", kv[i], kv[i+1])
	}
	fmt.Fprintln(w, s)
}

// backoff sleeps for d (doubling up to max) or until ctx ends.
type backoff struct {
	d, max time.Duration
}

func (b *backoff) wait(ctx context.Context) error {
	if b.d == 0 {
		b.d = time.Second
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.d):
	}
	b.d *= 2
	if b.d > b.max {
		b.d = b.max
	}
	return nil
}

// Run is the maintenance agent.
func (c *Config) Run(ctx context.Context, log *slog.Logger) error {
	if c.Console == nil {
		c.Console = os.Stderr
	}
	if c.Root == "" {
		c.Root = "/"
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	line := c.Cmdline
	if line == "" {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			return fmt.Errorf("reading kernel command line: %w", err)
		}
		line = string(b)
	}
	cl, err := cmdline.Parse(line)
	if err != nil {
		return err
	}
	Mark(c.Console, "cmdline", "fabric", cl.Fabric, "bootmac", cl.BootMAC)

	ncfg := netconf.Config{Prefer: cl.BootMAC}
	var lease *netconf.Lease
	for b := (backoff{max: c.MaxBackoff}); ; {
		lease, err = netconf.Up(ctx, ncfg, log)
		if err == nil {
			break
		}
		log.Warn("network not up yet", "err", err)
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
	Mark(c.Console, "network", "iface", lease.Interface, "mac", lease.MAC, "ip", lease.Addr.String(), "server", lease.Server)
	go netconf.Renew(ctx, lease, ncfg, log)

	inv, err := inventory.Collect(c.Root)
	if err != nil {
		return err
	}
	Mark(c.Console, "inventory", "cpus", inv.CPU.Count, "memory", inv.Memory, "nics", len(inv.NICs), "disks", len(inv.Disks))

	fabric := &client.Client{BaseURL: cl.Fabric, Token: cl.Token}
	reg := api.Registration{MAC: lease.MAC, IP: lease.Addr.IP.String(), AgentVersion: Version, Inventory: inv}
	for {
		resp := register(ctx, fabric, reg, c.MaxBackoff, log)
		if resp == nil {
			return ctx.Err()
		}
		Mark(c.Console, "registered", "node", resp.NodeID)
		heartbeat(ctx, fabric, *resp, lease, c.Console, c.MaxBackoff, log)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("the fabric no longer knows this node; registering again")
	}
}

func register(ctx context.Context, fabric *client.Client, reg api.Registration, max time.Duration, log *slog.Logger) *api.RegisterResponse {
	for b := (backoff{max: max}); ; {
		resp, err := fabric.Register(ctx, reg)
		if err == nil {
			return &resp
		}
		log.Warn("registering with the fabric", "fabric", fabric.BaseURL, "err", err)
		if b.wait(ctx) != nil {
			return nil
		}
	}
}

// heartbeat posts status until ctx ends or the fabric rejects the credential.
func heartbeat(ctx context.Context, fabric *client.Client, reg api.RegisterResponse, lease *netconf.Lease, console io.Writer, max time.Duration, log *slog.Logger) {
	interval := time.Duration(reg.HeartbeatInterval)
	if interval <= 0 {
		interval = 5 * time.Second
	}
	first := true
	b := backoff{max: max}
	for {
		resp, err := fabric.Status(ctx, reg.NodeID, reg.Credential, api.Status{IP: lease.Addr.IP.String()})
		switch {
		case client.IsUnauthorized(err):
			return
		case err != nil:
			log.Warn("heartbeat", "err", err)
			if b.wait(ctx) != nil {
				return
			}
			continue
		}
		b = backoff{max: max}
		if first {
			Mark(console, "heartbeat", "node", reg.NodeID, "interval", interval)
			first = false
		}
		if d := time.Duration(resp.HeartbeatInterval); d > 0 {
			interval = d
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
