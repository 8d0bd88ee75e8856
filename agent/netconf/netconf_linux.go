// Package netconf brings a machine's network up: every physical link is set
// up with netlink, links with carrier run DHCP (nclient4), and the first
// lease is applied (address, default route, resolv.conf). The lease is then
// renewed in the background for as long as the context lives.
package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// Config tunes bring-up.
type Config struct {
	// Prefer is the MAC of the link to try first (the boot NIC). Default: none.
	Prefer string
	// CarrierWait is how long to wait for any link to get carrier. Default 15s.
	CarrierWait time.Duration
	// ResolvConf is written with the lease's DNS servers. Default
	// "/etc/resolv.conf"; "-" skips it.
	ResolvConf string
	// Hostname is sent in DHCP requests. Default: none.
	Hostname string
}

// Lease is what the network came up with.
type Lease struct {
	Interface string
	MAC       string
	Addr      net.IPNet
	Router    net.IP
	Server    net.IP
	Duration  time.Duration
	ack       *nclient4.Lease
}

// physical reports whether a link has a device behind it (not lo, not a bridge).
func physical(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name + "/device")
	return err == nil
}

// Up brings the links up and returns the first DHCP lease applied.
func Up(ctx context.Context, cfg Config, log *slog.Logger) (*Lease, error) {
	if cfg.CarrierWait == 0 {
		cfg.CarrierWait = 15 * time.Second
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("netconf: listing links: %w", err)
	}
	var phys []netlink.Link
	for _, l := range links {
		name := l.Attrs().Name
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			if err := netlink.LinkSetUp(l); err != nil {
				log.Warn("netconf: lo up", "err", err)
			}
			continue
		}
		if !physical(name) {
			continue
		}
		if err := netlink.LinkSetUp(l); err != nil {
			log.Warn("netconf: link up", "link", name, "err", err)
			continue
		}
		phys = append(phys, l)
	}
	if len(phys) == 0 {
		return nil, errors.New("netconf: no physical network interface (is the NIC driver loaded?)")
	}
	// Boot NIC first.
	for i, l := range phys {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), cfg.Prefer) {
			phys[0], phys[i] = phys[i], phys[0]
		}
	}
	deadline := time.Now().Add(cfg.CarrierWait)
	for {
		var withCarrier []netlink.Link
		for _, l := range phys {
			if carrier(l.Attrs().Name) {
				withCarrier = append(withCarrier, l)
			}
		}
		for _, l := range withCarrier {
			lease, err := dhcp(ctx, l, cfg, log)
			if err != nil {
				log.Warn("netconf: DHCP failed", "link", l.Attrs().Name, "err", err)
				continue
			}
			return lease, nil
		}
		if time.Now().After(deadline) && len(withCarrier) == 0 {
			return nil, fmt.Errorf("netconf: no link got carrier within %v", cfg.CarrierWait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if len(withCarrier) > 0 {
			return nil, errors.New("netconf: DHCP failed on every link with carrier")
		}
	}
}

func carrier(name string) bool {
	b, err := os.ReadFile("/sys/class/net/" + name + "/carrier")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

func dhcp(ctx context.Context, l netlink.Link, cfg Config, log *slog.Logger) (*Lease, error) {
	name := l.Attrs().Name
	c, err := nclient4.New(name, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(4))
	if err != nil {
		return nil, fmt.Errorf("DHCP client on %s: %w", name, err)
	}
	defer c.Close()
	var mods []dhcpv4.Modifier
	if cfg.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(cfg.Hostname)))
	}
	nl, err := c.Request(ctx, mods...)
	if err != nil {
		return nil, fmt.Errorf("DHCP on %s: %w", name, err)
	}
	lease, err := apply(l, nl, cfg, log)
	if err != nil {
		return nil, err
	}
	return lease, nil
}

func apply(l netlink.Link, nl *nclient4.Lease, cfg Config, log *slog.Logger) (*Lease, error) {
	ack := nl.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	lease := &Lease{
		Interface: l.Attrs().Name,
		MAC:       l.Attrs().HardwareAddr.String(),
		Addr:      net.IPNet{IP: ack.YourIPAddr.To4(), Mask: mask},
		Server:    ack.ServerIdentifier(),
		Duration:  ack.IPAddressLeaseTime(time.Hour),
		ack:       nl,
	}
	if rs := ack.Router(); len(rs) > 0 {
		lease.Router = rs[0]
	}
	addr := &netlink.Addr{IPNet: &lease.Addr}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return nil, fmt.Errorf("netconf: adding %v to %s: %w", lease.Addr.String(), lease.Interface, err)
	}
	if lease.Router != nil {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: lease.Router, Dst: nil}
		if err := netlink.RouteReplace(r); err != nil {
			log.Warn("netconf: default route", "via", lease.Router, "err", err)
		}
	}
	if dns := ack.DNS(); len(dns) > 0 && cfg.ResolvConf != "-" {
		var b strings.Builder
		for _, d := range dns {
			fmt.Fprintf(&b, "nameserver %s\n", d)
		}
		if err := os.WriteFile(cfg.ResolvConf, []byte(b.String()), 0o644); err != nil {
			log.Warn("netconf: writing resolv.conf", "err", err)
		}
	}
	return lease, nil
}

// Renew keeps the lease alive until ctx ends, renewing at half its time and
// falling back to a fresh DHCP exchange if the server stops answering.
func Renew(ctx context.Context, lease *Lease, cfg Config, log *slog.Logger) error {
	for {
		wait := lease.Duration / 2
		if wait < 10*time.Second {
			wait = 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		l, err := netlink.LinkByName(lease.Interface)
		if err != nil {
			log.Warn("netconf: renew: link gone", "link", lease.Interface, "err", err)
			continue
		}
		c, err := nclient4.New(lease.Interface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
		if err != nil {
			log.Warn("netconf: renew", "err", err)
			continue
		}
		nl, err := c.Renew(ctx, lease.ack)
		if err != nil {
			log.Warn("netconf: renew failed, asking afresh", "err", err)
			nl, err = c.Request(ctx)
		}
		c.Close()
		if err != nil {
			log.Warn("netconf: DHCP", "err", err)
			continue
		}
		nlease, err := apply(l, nl, cfg, log)
		if err != nil {
			log.Warn("netconf: applying renewed lease", "err", err)
			continue
		}
		*lease = *nlease
		log.Debug("netconf: lease renewed", "addr", lease.Addr.String())
	}
}
