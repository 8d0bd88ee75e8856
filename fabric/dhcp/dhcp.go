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
// Any other PXE client (option 60 "PXEClient") gets the first-stage iPXE
// binary name for its architecture and this server as next-server.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"golang.org/x/sync/errgroup"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// LeaseStore persists leases. *store.Store implements it.
type LeaseStore interface {
	Leases(ctx context.Context) ([]api.Lease, error)
	CommitLeases(ctx context.Context, puts []api.Lease, dels []string) error
}

// Config describes the pool and the boot options.
type Config struct {
	// Interface to serve on. Required.
	Interface string
	// ServerIP is this server's address on Interface (option 54, next-server).
	// Default: the first IPv4 address of Interface.
	ServerIP net.IP
	// Netmask of the served subnet. Default: the mask of ServerIP on Interface.
	Netmask net.IPMask
	// PoolStart and PoolEnd bound the dynamic pool, inclusive. Required.
	PoolStart, PoolEnd net.IP
	// Router (option 3). Default: none.
	Router net.IP
	// DNS servers (option 6). Default: none.
	DNS []net.IP
	// LeaseTime (option 51). Default 1h.
	LeaseTime time.Duration
	// Reservations maps a MAC ("52:54:00:12:34:56") to a fixed address,
	// which may lie outside the pool but must be in the subnet.
	Reservations map[string]net.IP
	// ScriptURL returns the iPXE script URL for a MAC. Required for netboot;
	// if nil, clients get addresses but no boot file.
	ScriptURL func(mac string) string
	// Leases persists leases. Required.
	Leases LeaseStore
	// Seen is called with the MAC of each netboot (PXE or iPXE) client that
	// sends a DISCOVER. It runs in the packet path: it must not block.
	// Default: nothing.
	Seen func(mac string)
	// OfferHold is how long an offered address is held. Default 30s.
	OfferHold time.Duration
	// DeclineHold is how long a declined address is quarantined. Default 10m.
	DeclineHold time.Duration
	// Workers bounds concurrently handled packets. Default 512.
	Workers int
	// Conn replaces the socket on Interface (tests). Default: a UDP socket
	// on port 67 bound to Interface.
	Conn net.PacketConn
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Server is a running DHCP server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	pool   *pool
	commit chan commitReq
	// Malformed counts packets that could not be parsed.
	Malformed atomic.Int64
}

// New validates cfg, fills in defaults and loads the leases from the store.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Leases == nil {
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
	p, err := newPool(cfg)
	if err != nil {
		return nil, err
	}
	leases, err := cfg.Leases.Leases(ctx)
	if err != nil {
		return nil, fmt.Errorf("dhcp: loading leases: %w", err)
	}
	for _, l := range leases {
		if err := p.load(l); err != nil {
			log.Warn("dhcp: ignoring stored lease", "mac", l.MAC, "ip", l.IP, "err", err)
		}
	}
	log.Info("dhcp: pool ready", "start", cfg.PoolStart, "end", cfg.PoolEnd, "leases", len(leases), "server", cfg.ServerIP)
	return &Server{cfg: cfg, log: log, pool: p, commit: make(chan commitReq, 4*cfg.Workers)}, nil
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
	g.Go(func() error { return s.committer(ctx) })
	g.Go(func() error { return s.expireLoop(ctx) })
	g.Go(func() error {
		<-ctx.Done()
		return conn.Close()
	})
	g.Go(func() error { return s.readLoop(ctx, conn) })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (s *Server) readLoop(ctx context.Context, conn net.PacketConn) error {
	sem := make(chan struct{}, s.cfg.Workers)
	for {
		buf := make([]byte, 1500)
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("dhcp: reading: %w", err)
		}
		req, err := parse(buf[:n])
		if err != nil {
			if s.Malformed.Add(1)%1000 == 1 {
				s.log.Warn("dhcp: dropping malformed packet", "from", peer, "len", n, "err", err, "malformed_total", s.Malformed.Load())
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		go func() {
			defer func() { <-sem }()
			resp := s.Handle(ctx, req)
			if resp == nil {
				return
			}
			if _, err := conn.WriteTo(resp.ToBytes(), replyAddr(req, peer)); err != nil && ctx.Err() == nil {
				s.log.Warn("dhcp: sending reply", "mac", req.ClientHWAddr, "err", err)
			}
		}()
	}
}

// parse decodes a packet and rejects what the handler cannot use.
func parse(b []byte) (m *dhcpv4.DHCPv4, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("parser panic: %v", r)
		}
	}()
	m, err = dhcpv4.FromBytes(b)
	if err != nil {
		return nil, err
	}
	if m.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, fmt.Errorf("opcode %v is not BOOTREQUEST", m.OpCode)
	}
	if len(m.ClientHWAddr) != 6 {
		return nil, fmt.Errorf("hardware address length %d, want 6", len(m.ClientHWAddr))
	}
	return m, nil
}

// replyAddr picks the destination of a reply as RFC 2131 §4.1 says.
func replyAddr(req *dhcpv4.DHCPv4, peer net.Addr) net.Addr {
	if gi := req.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: dhcpv4.ServerPort}
	}
	if ci := req.ClientIPAddr; ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

type commitReq struct {
	puts []api.Lease
	dels []string // MACs whose leases go
	done chan error
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
		var puts []api.Lease
		var dels []string
		for _, r := range batch {
			puts = append(puts, r.puts...)
			dels = append(dels, r.dels...)
		}
		err := s.cfg.Leases.CommitLeases(ctx, puts, dels)
		if err != nil {
			s.log.Error("dhcp: persisting leases", "count", len(batch), "err", err)
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}
