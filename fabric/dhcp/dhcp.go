// Package dhcp is loomd's DHCPv4 server for the netboot network.
//
// It hands out addresses from one pool (plus static reservations), keeps
// every lease in the store, and tells iPXE clients where their boot script
// is. A lease is written to the store before its ACK leaves: writes from
// concurrent clients are batched into one transaction (group commit), so
// persistence costs one etcd commit per batch, not per client.
//
// Address choice for a client, in order: its reservation; its current or
// last lease; the address it asks for if free; the next free address of the
// pool; the address of the lease that expired longest ago. Offers are held
// in memory for OfferHold so concurrent clients never get the same address.
// A DECLINEd address is quarantined for DeclineHold.
//
// Boot: a client whose user class is "iPXE" (option 77) or that sends
// option 175 is an iPXE client and gets its HTTP script URL as the boot file.
// A firmware PXE client (option 60 "PXEClient") gets the first-stage iPXE
// binary for its architecture (option 93) on this server's TFTP. A UEFI HTTP
// boot client (option 60 "HTTPClient") gets option 60 "HTTPClient" back and
// the full http:// URL of the EFI first stage.
//
// Subnets: the netboot interface's own subnet, plus any number behind DHCP
// relays (Config.Subnets). A relayed request (giaddr set) gets its address,
// netmask and router from the subnet that holds its giaddr; the relay agent
// information (option 82) is echoed in the reply and kept in the lease.
//
// Proxy mode (ModeProxy, "proxyDHCP"): another DHCP server owns the
// addresses. This one never offers an address; it answers netboot clients
// only, with boot information: on port 67 an OFFER without an address, and
// on port 4011 an ACK to the PXE clients that ask there. Both carry option
// 60 and, for PXE, option 43 with PXE_DISCOVERY_CONTROL=8 ("boot the file in
// this offer, no boot server discovery"): firmwares that see a proxy offer
// without option 43 ignore it.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sync/errgroup"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// LeaseStore persists leases. *store.Store implements it: each address
// is claimed by one MAC in the store, so that several servers (loomd's
// replicas) on one network never hand out an address twice.
type LeaseStore interface {
	Leases(ctx context.Context) ([]api.Lease, error)
	// ClaimLeases stores puts, each only if its address is claimed as
	// its Prev says, and removes dels; it returns the puts that lost
	// their address to another MAC.
	ClaimLeases(ctx context.Context, puts []store.LeaseWrite, dels []api.Lease) ([]store.LeaseConflict, error)
	// Lease reads the lease of one MAC (to learn another server's).
	Lease(ctx context.Context, mac string) (api.Lease, error)
}

// Mode is how the server takes part in DHCP.
type Mode string

const (
	// ModeServer hands out addresses and boot information.
	ModeServer Mode = "server"
	// ModeProxy hands out boot information only (proxyDHCP), next to a
	// DHCP server that owns the addresses.
	ModeProxy Mode = "proxy"
)

// ParseMode checks a mode's name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeServer, ModeProxy:
		return m, nil
	case "":
		return ModeServer, nil
	}
	return "", fmt.Errorf("DHCP mode %q: want server or proxy", s)
}

// Subnet is a subnet behind a DHCP relay.
type Subnet struct {
	// Prefix is the subnet, e.g. 10.80.0.0/24. Requests whose giaddr lies
	// in it get their address here. Required.
	Prefix netip.Prefix
	// PoolStart and PoolEnd bound the pool, inclusive. Required.
	PoolStart, PoolEnd net.IP
	// Router (option 3). Default: the relay's address (giaddr).
	Router net.IP
	// DNS (option 6). Default: Config.DNS.
	DNS []net.IP
}

// ParseSubnet reads a relayed subnet as given on loomd's command line:
// "PREFIX,pool=START-END[,router=IP][,dns=IP[;IP...]]", e.g.
// "10.80.0.0/24,pool=10.80.0.100-10.80.0.199,router=10.80.0.1".
func ParseSubnet(s string) (Subnet, error) {
	fields := strings.Split(s, ",")
	var sn Subnet
	pfx, err := netip.ParsePrefix(strings.TrimSpace(fields[0]))
	if err != nil || !pfx.Addr().Is4() {
		return Subnet{}, fmt.Errorf("subnet %q: %q is not an IPv4 prefix like 10.80.0.0/24", s, fields[0])
	}
	sn.Prefix = pfx.Masked()
	ip := func(key, v string) (net.IP, error) {
		a := net.ParseIP(strings.TrimSpace(v)).To4()
		if a == nil {
			return nil, fmt.Errorf("subnet %q: %s %q is not an IPv4 address", s, key, v)
		}
		return a, nil
	}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			return Subnet{}, fmt.Errorf("subnet %q: %q: want key=value (pool, router, dns)", s, f)
		}
		switch k {
		case "pool":
			a, b, ok := strings.Cut(v, "-")
			if !ok {
				return Subnet{}, fmt.Errorf("subnet %q: pool %q: want START-END", s, v)
			}
			if sn.PoolStart, err = ip("pool start", a); err != nil {
				return Subnet{}, err
			}
			if sn.PoolEnd, err = ip("pool end", b); err != nil {
				return Subnet{}, err
			}
		case "router":
			if sn.Router, err = ip("router", v); err != nil {
				return Subnet{}, err
			}
		case "dns":
			for _, d := range strings.Split(v, ";") {
				a, err := ip("dns", d)
				if err != nil {
					return Subnet{}, err
				}
				sn.DNS = append(sn.DNS, a)
			}
		default:
			return Subnet{}, fmt.Errorf("subnet %q: unknown key %q (want pool, router, dns)", s, k)
		}
	}
	if sn.PoolStart == nil {
		return Subnet{}, fmt.Errorf("subnet %q: pool=START-END is required", s)
	}
	return sn, nil
}

// Config describes the pool and the boot options.
type Config struct {
	// Mode is ModeServer (default) or ModeProxy.
	Mode Mode
	// Interface to serve on. Required.
	Interface string
	// ServerIP is this server's address on Interface (option 54, next-server).
	// Default: the first IPv4 address of Interface.
	ServerIP net.IP
	// Netmask of the served subnet. Default: the mask of ServerIP on Interface.
	Netmask net.IPMask
	// PoolStart and PoolEnd bound the dynamic pool of the interface's own
	// subnet, inclusive. Required in ModeServer.
	PoolStart, PoolEnd net.IP
	// Subnets are served through relays. Default: none.
	Subnets []Subnet
	// Router (option 3). Default: none.
	Router net.IP
	// DNS servers (option 6). Default: none.
	DNS []net.IP
	// LeaseTime (option 51). Default 1h.
	LeaseTime time.Duration
	// LeaseReuse: a client asking again for the address it holds, whose
	// stored lease is younger than this fraction of LeaseTime and
	// otherwise unchanged, is ACKed with the lease as stored (the time it
	// has left) instead of a new one written first, as Kea's
	// cache-threshold does: a machine netbooting asks three or four times
	// in a minute (firmware, iPXE, maintenance OS, host OS). Default 0.25;
	// negative: every ACK writes a new lease.
	LeaseReuse float64
	// Reservations maps a MAC ("52:54:00:12:34:56") to a fixed address,
	// which may lie outside the pool but must be in one of the subnets.
	Reservations map[string]net.IP
	// ScriptURL returns the iPXE script URL for a MAC. Required for netboot;
	// if nil, clients get addresses but no boot file.
	ScriptURL func(mac string) string
	// NoTFTP says nothing serves the first stage over TFTP: firmware PXE
	// clients then get no boot file (UEFI ones go on to HTTP boot).
	NoTFTP bool
	// HTTPBootURL is where UEFI HTTP boot clients find the first stage:
	// they are sent HTTPBootURL + "/ipxe.efi". Default: no HTTP boot.
	HTTPBootURL string
	// Leases persists leases. Required in ModeServer.
	Leases LeaseStore
	// Seen is called with the MAC of each netboot (PXE or iPXE) client that
	// sends a DISCOVER. It runs in the packet path: it must not block.
	// Default: nothing.
	Seen func(mac string)
	// OfferHold is how long an offered address is held. Default 30s.
	OfferHold time.Duration
	// Spread, if not 0, starts each pool's search for a free address at
	// an offset of its own (Spread modulo the pool's size): servers
	// sharing a network then rarely offer the same address at once.
	Spread uint32
	// DeclineHold is how long a declined address is quarantined. Default 10m.
	DeclineHold time.Duration
	// Workers bounds concurrently handled packets. Default 512.
	Workers int
	// Conn replaces the socket on Interface (tests). Default: a UDP socket
	// on port 67 bound to Interface.
	Conn net.PacketConn
	// ProxyConn replaces the proxy mode's port 4011 socket (tests).
	// Default: a UDP socket on ServerIP port 4011.
	ProxyConn net.PacketConn
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Server is a running DHCP server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	local  *pool   // the interface's own subnet (nil in ModeProxy)
	pools  []*pool // local first, then the relayed subnets
	commit chan commitReq
	// Malformed counts packets that could not be parsed.
	Malformed    atomic.Int64
	unknownRelay atomic.Int64
	unknownArch  atomic.Int64
	count        counters
}

// New validates cfg, fills in defaults and loads the leases from the store.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mode, err := ParseMode(string(cfg.Mode))
	if err != nil {
		return nil, fmt.Errorf("dhcp: %w", err)
	}
	cfg.Mode = mode
	if cfg.Leases == nil && mode == ModeServer {
		return nil, errors.New("dhcp: Leases store is required")
	}
	if cfg.ServerIP == nil || cfg.Netmask == nil {
		if cfg.Interface == "" {
			return nil, errors.New("dhcp: Interface (or ServerIP and Netmask) is required")
		}
		ip, mask, err := interfaceAddr(cfg.Interface)
		if err != nil {
			return nil, err
		}
		if cfg.ServerIP == nil {
			cfg.ServerIP = ip
		}
		if cfg.Netmask == nil {
			cfg.Netmask = mask
		}
	}
	cfg.ServerIP = cfg.ServerIP.To4()
	if cfg.ServerIP == nil {
		return nil, errors.New("dhcp: ServerIP must be IPv4")
	}
	if cfg.LeaseTime == 0 {
		cfg.LeaseTime = time.Hour
	}
	switch {
	case cfg.LeaseReuse == 0:
		cfg.LeaseReuse = 0.25
	case cfg.LeaseReuse >= 1:
		return nil, fmt.Errorf("dhcp: LeaseReuse %v: a fraction of the lease time below 1", cfg.LeaseReuse)
	}
	if cfg.OfferHold == 0 {
		cfg.OfferHold = 30 * time.Second
	}
	if cfg.DeclineHold == 0 {
		cfg.DeclineHold = 10 * time.Minute
	}
	if cfg.Workers == 0 {
		cfg.Workers = 512
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: log, commit: make(chan commitReq, 4*cfg.Workers)}
	if mode == ModeProxy {
		log.Info("dhcp: proxyDHCP ready: boot information only, addresses come from another server", "server", cfg.ServerIP)
		return s, nil
	}
	if err := s.makePools(); err != nil {
		return nil, err
	}
	leases, err := cfg.Leases.Leases(ctx)
	if err != nil {
		return nil, fmt.Errorf("dhcp: loading leases: %w", err)
	}
	for _, l := range leases {
		if err := s.load(l); err != nil {
			log.Warn("dhcp: ignoring stored lease", "mac", l.MAC, "ip", l.IP, "err", err)
		}
	}
	for _, p := range s.pools {
		log.Info("dhcp: pool ready", "subnet", p.prefix(), "start", ipOf(p.start), "end", ipOf(p.end), "relayed", p != s.local, "server", cfg.ServerIP)
	}
	log.Info("dhcp: leases loaded", "leases", len(leases))
	return s, nil
}

// makePools builds the local pool and one per relayed subnet, and hands
// each reservation to the subnet that holds it.
func (s *Server) makePools() error {
	cfg := s.cfg
	mask := ip4(net.IP(cfg.Netmask))
	if len(cfg.Netmask) == 16 {
		mask = ip4(net.IP(cfg.Netmask[12:]))
	}
	specs := []poolSpec{{
		name: "local", subnet: ip4(cfg.ServerIP) & mask, mask: mask, start: cfg.PoolStart, end: cfg.PoolEnd,
		exclude: ip4(cfg.ServerIP), router: cfg.Router, dns: cfg.DNS, netmask: net.IPMask(ipOf(mask)),
	}}
	for i, sn := range cfg.Subnets {
		if !sn.Prefix.IsValid() || !sn.Prefix.Addr().Is4() {
			return fmt.Errorf("dhcp: relayed subnet %d: %q is not an IPv4 prefix", i+1, sn.Prefix)
		}
		pm := uint32(0xffffffff) << (32 - sn.Prefix.Bits())
		if sn.Prefix.Bits() == 0 {
			pm = 0
		}
		dns := sn.DNS
		if len(dns) == 0 {
			dns = cfg.DNS
		}
		specs = append(specs, poolSpec{
			name: sn.Prefix.String(), subnet: ip4(net.IP(sn.Prefix.Masked().Addr().AsSlice())), mask: pm,
			start: sn.PoolStart, end: sn.PoolEnd, exclude: ip4(sn.Router), router: sn.Router, dns: dns,
			netmask: net.CIDRMask(sn.Prefix.Bits(), 32),
		})
	}
	for _, sp := range specs {
		sp.leaseTime, sp.offerHold, sp.declineHold = cfg.LeaseTime, cfg.OfferHold, cfg.DeclineHold
		p, err := newPool(sp)
		if err != nil {
			return err
		}
		if cfg.Spread != 0 {
			p.cursor = p.start + cfg.Spread%(p.end-p.start+1)
		}
		for _, q := range s.pools {
			if q.subnet&p.mask == p.subnet || p.subnet&q.mask == q.subnet {
				return fmt.Errorf("dhcp: subnets %s and %s overlap", q.prefix(), p.prefix())
			}
		}
		s.pools = append(s.pools, p)
	}
	s.local = s.pools[0]
	for mac, ip := range cfg.Reservations {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return fmt.Errorf("dhcp: reservation %q: %w", mac, err)
		}
		p := s.poolOf(ip4(ip))
		if p == nil {
			return fmt.Errorf("dhcp: reservation %s=%v: address is not in any served subnet", mac, ip)
		}
		if err := p.reserve(hw.String(), ip4(ip)); err != nil {
			return fmt.Errorf("dhcp: reservation %s=%v: %w", mac, ip, err)
		}
	}
	return nil
}

// poolOf is the pool whose subnet holds v, or nil.
func (s *Server) poolOf(v uint32) *pool {
	for _, p := range s.pools {
		if p.inSubnet(v) {
			return p
		}
	}
	return nil
}

// load adds a stored lease to the pool of its subnet.
func (s *Server) load(l api.Lease) error {
	p := s.poolOf(ip4(net.ParseIP(l.IP)))
	if p == nil {
		return fmt.Errorf("address %q is in no served subnet", l.IP)
	}
	return p.load(l)
}

func interfaceAddr(name string) (net.IP, net.IPMask, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, nil, fmt.Errorf("dhcp: interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, nil, fmt.Errorf("dhcp: addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4(), n.Mask, nil
		}
	}
	return nil, nil, fmt.Errorf("dhcp: interface %s has no IPv4 address", name)
}

// Serve answers DHCP until ctx is cancelled.
func (s *Server) Serve(ctx context.Context) error {
	conn := s.cfg.Conn
	if conn == nil {
		c, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
		if err != nil {
			return fmt.Errorf("dhcp: listening on %s: %w", s.cfg.Interface, err)
		}
		conn = c
	}
	g, ctx := errgroup.WithContext(ctx)
	if s.cfg.Mode == ModeProxy {
		pc := s.cfg.ProxyConn
		if pc == nil {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: s.cfg.ServerIP, Port: ProxyPort})
			if err != nil {
				conn.Close()
				return fmt.Errorf("dhcp: proxyDHCP port: %w", err)
			}
			pc = c
		}
		g.Go(func() error {
			<-ctx.Done()
			return pc.Close()
		})
		g.Go(func() error { return s.readLoop(ctx, pc, s.handleProxyPort, peerAddr) })
	} else {
		g.Go(func() error { return s.committer(ctx) })
		g.Go(func() error { return s.expireLoop(ctx) })
	}
	g.Go(func() error {
		<-ctx.Done()
		return conn.Close()
	})
	g.Go(func() error { return s.readLoop(ctx, conn, s.Handle, replyAddr) })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ProxyPort is where PXE clients send their requests to a proxyDHCP server.
const ProxyPort = 4011

// batch is how many packets one read (recvmmsg) or write (sendmmsg) moves.
const batch = 64

type commitReq struct {
	puts []store.LeaseWrite
	dels []api.Lease // leases that go (with their address's claim if IP is set)
	done chan error
}

// conflictError is a lease that lost its address to another server's.
type conflictError struct{ store.LeaseConflict }

func (e *conflictError) Error() string {
	return fmt.Sprintf("address %s is leased to %s by another server", e.IP, e.Holder)
}

// persist writes one lease change through the group committer and waits.
func (s *Server) persist(ctx context.Context, r commitReq) error {
	r.done = make(chan error, 1)
	select {
	case s.commit <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// committer batches lease writes: whatever queued up while the previous
// transaction was in flight goes into the next one.
func (s *Server) committer(ctx context.Context) error {
	batch := make([]commitReq, 0, 256)
	for {
		batch = batch[:0]
		select {
		case r := <-s.commit:
			batch = append(batch, r)
		case <-ctx.Done():
			return nil
		}
		runtime.Gosched()
	fill:
		for len(batch) < store.MaxTxnOps/2 {
			select {
			case r := <-s.commit:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		var puts []store.LeaseWrite
		var dels []api.Lease
		owner := make([]int, 0, len(batch)) // puts[i] is batch[owner[i]]'s
		for bi, r := range batch {
			puts = append(puts, r.puts...)
			dels = append(dels, r.dels...)
			for range r.puts {
				owner = append(owner, bi)
			}
		}
		conflicts, err := s.cfg.Leases.ClaimLeases(ctx, puts, dels)
		if err != nil {
			s.log.Error("dhcp: persisting leases", "count", len(batch), "err", err)
		}
		lost := map[int]error{}
		for _, c := range conflicts {
			lost[owner[c.Index]] = &conflictError{c}
		}
		for bi, r := range batch {
			if e, ok := lost[bi]; ok && err == nil {
				r.done <- e
				continue
			}
			r.done <- err
		}
	}
}
