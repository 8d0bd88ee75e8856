// The read loop: packets in and replies out in batches (recvmmsg and
// sendmmsg through x/net/ipv4), the parse that never panics on a malformed
// packet, and where replies go.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

type handler func(context.Context, *dhcpv4.DHCPv4) *dhcpv4.DHCPv4

// readLoop serves one socket. It reads packets in batches (recvmmsg where
// the socket allows), answers at once every request whose handling cannot
// block and sends those answers together (sendmmsg); a request that waits
// for the store (the lease commit of a REQUEST, RELEASE or DECLINE) gets a
// goroutine of its own, at most Workers at a time, whose answer goes out
// in a batch with the others ready by then (sendLoop). On a busy network
// the path of a DISCOVER is then two system calls per 64 packets, not two
// per packet plus a goroutine, and a group commit's ACKs leave together.
func (s *Server) readLoop(ctx context.Context, conn net.PacketConn, handle handler, dest func(*dhcpv4.DHCPv4, net.Addr) net.Addr) error {
	pc := newBatchConn(conn)
	sem := make(chan struct{}, s.cfg.Workers)
	in := make([]ipv4.Message, batch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	out := make([]ipv4.Message, 0, batch)
	outReq := make([]*dhcpv4.DHCPv4, 0, batch)
	arena := make([]byte, 0, batch*bootpMinLen*2) // the batch's replies, encoded
	later := make(chan reply, s.cfg.Workers)
	go s.sendLoop(ctx, pc, later)
	for {
		n, err := pc.ReadBatch(in, 0)
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
		out, outReq, arena = out[:0], outReq[:0], arena[:0]
		for _, m := range in[:n] {
			req, err := parse(m.Buffers[0][:m.N])
			if err != nil {
				if s.Malformed.Add(1)%1000 == 1 {
					s.log.Warn("dhcp: dropping malformed packet", "from", m.Addr, "len", m.N, "err", err, "malformed_total", s.Malformed.Load())
				}
				continue
			}
			s.count.received[kindIndex(msgType(req))].Add(1)
			if !s.blocks(req) {
				if resp := s.answer(ctx, handle, req); resp != nil {
					var b []byte
					arena, b = encodeInto(arena, resp)
					out = append(out, ipv4.Message{Buffers: [][]byte{b}, Addr: dest(req, m.Addr)})
					outReq = append(outReq, req)
				}
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			peer := m.Addr
			go func() {
				defer func() { <-sem }()
				if resp := s.answer(ctx, handle, req); resp != nil {
					select {
					case later <- reply{resp, dest(req, peer), req}:
					case <-ctx.Done():
					}
				}
			}()
		}
		if err := s.send(ctx, pc, out, outReq); err != nil {
			return nil
		}
	}
}

// reply is an answer to send, where to, and the request it answers.
type reply struct {
	resp *dhcpv4.DHCPv4
	to   net.Addr
	req  *dhcpv4.DHCPv4
}

// encodeInto appends resp's wire form to arena and returns both; the
// message's slice ends at its end.
func encodeInto(arena []byte, resp *dhcpv4.DHCPv4) ([]byte, []byte) {
	start := len(arena)
	arena = appendMessage(arena, resp)
	return arena, arena[start:len(arena):len(arena)]
}

// sendLoop sends the answers that waited for the store (ACKs, NAKs), as
// many in one batch as have come in since the last (a group commit's
// ACKs leave together), until ctx ends.
func (s *Server) sendLoop(ctx context.Context, pc batchConn, in <-chan reply) {
	out := make([]ipv4.Message, 0, batch)
	reqs := make([]*dhcpv4.DHCPv4, 0, batch)
	arena := make([]byte, 0, batch*bootpMinLen*2)
	add := func(r reply) {
		var b []byte
		arena, b = encodeInto(arena, r.resp)
		out, reqs = append(out, ipv4.Message{Buffers: [][]byte{b}, Addr: r.to}), append(reqs, r.req)
	}
	for {
		out, reqs, arena = out[:0], reqs[:0], arena[:0]
		select {
		case r := <-in:
			add(r)
		case <-ctx.Done():
			return
		}
	more:
		for len(out) < batch {
			select {
			case r := <-in:
				add(r)
			default:
				break more
			}
		}
		if s.send(ctx, pc, out, reqs) != nil {
			return
		}
	}
}

// send writes out (the answers to reqs) in one batch; it fails only when
// ctx is done.
func (s *Server) send(ctx context.Context, pc batchConn, out []ipv4.Message, reqs []*dhcpv4.DHCPv4) error {
	for i := 0; i < len(out); {
		k, err := pc.WriteBatch(out[i:], 0)
		i += k
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// out[i] could not be sent (e.g. no route to a relay): say
			// so and go on with the rest.
			s.count.drop(DropSendFailed)
			s.log.Warn("dhcp: sending reply", "mac", reqs[i].ClientHWAddr, "to", out[i].Addr, "err", err)
			i++
		}
	}
	return nil
}

// blocks says whether handling req waits for the store: a lease change in
// server mode. Everything else is answered from memory.
func (s *Server) blocks(req *dhcpv4.DHCPv4) bool {
	if s.cfg.Mode == ModeProxy {
		return false
	}
	switch msgType(req) {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		return true
	}
	return false
}

// batchConn reads and writes packets in batches.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// newBatchConn batches with recvmmsg/sendmmsg on a UDP socket, one packet
// at a time on any other PacketConn (tests). A UDP socket's receive buffer
// is raised to 1 MiB (some 450 packets) too, so that a burst (a rack
// powering on, a GC pause) is queued rather than dropped; not further: under
// a sustained overload a deeper queue only makes every answer later.
func newBatchConn(c net.PacketConn) batchConn {
	if u, ok := c.(*net.UDPConn); ok {
		raiseReadBuffer(u, 1<<20)
		return ipv4.NewPacketConn(u)
	}
	return singleConn{c}
}

// raiseReadBuffer asks for n bytes of receive buffer, past the system's
// rmem_max where allowed (root: SO_RCVBUFFORCE).
func raiseReadBuffer(u *net.UDPConn, n int) {
	rc, err := u.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
}

type singleConn struct{ net.PacketConn }

func (c singleConn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	n, addr, err := c.ReadFrom(ms[0].Buffers[0])
	if err != nil {
		return 0, err
	}
	ms[0].N, ms[0].Addr = n, addr
	return 1, nil
}

func (c singleConn) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	for i, m := range ms {
		if _, err := c.WriteTo(m.Buffers[0], m.Addr); err != nil {
			return i, err
		}
	}
	return len(ms), nil
}

// parse decodes a packet and rejects what the handler cannot use.
func parse(b []byte) (m *dhcpv4.DHCPv4, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("parser panic: %v", r)
		}
	}()
	m, err = decode(b)
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

// peerAddr answers whoever sent the request (proxyDHCP port 4011: the
// client has its address by then).
func peerAddr(_ *dhcpv4.DHCPv4, peer net.Addr) net.Addr { return peer }

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
