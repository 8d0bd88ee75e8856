package dhcp

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Drop reasons: why a request got no answer (Stats.Dropped).
const (
	DropMalformed    = "malformed"     // the packet did not parse
	DropUnknownRelay = "unknown_relay" // relayed from a subnet not served
	DropNoAddress    = "no_address"    // no free address to offer
	DropOtherServer  = "other_server"  // a REQUEST for another server's offer
	DropNotLeased    = "store_error"   // the lease could not be stored: no ACK
	DropNoBootFile   = "no_boot_file"  // proxyDHCP: nothing to boot for the client's architecture
	DropSendFailed   = "send_failed"   // the answer could not be sent
)

var dropReasons = [...]string{DropMalformed, DropUnknownRelay, DropNoAddress, DropOtherServer, DropNotLeased, DropNoBootFile, DropSendFailed}

// messageKinds are the DHCP message types counted by name; the rest
// count as "other". Index: the message type's number.
var messageKinds = [...]string{
	dhcpv4.MessageTypeDiscover: "discover",
	dhcpv4.MessageTypeOffer:    "offer",
	dhcpv4.MessageTypeRequest:  "request",
	dhcpv4.MessageTypeDecline:  "decline",
	dhcpv4.MessageTypeAck:      "ack",
	dhcpv4.MessageTypeNak:      "nak",
	dhcpv4.MessageTypeRelease:  "release",
	dhcpv4.MessageTypeInform:   "inform",
}

const otherKind = len(messageKinds)

// answer handles req, counting the answer by its type.
func (s *Server) answer(ctx context.Context, handle handler, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	resp := handle(ctx, req)
	if resp != nil {
		s.count.sent[kindIndex(msgType(resp))].Add(1)
	}
	return resp
}

// counters are the server's traffic counts, by kind: atomics, so that
// counting costs the hot path nothing it would notice.
type counters struct {
	received [otherKind + 1]atomic.Int64
	sent     [otherKind + 1]atomic.Int64
	dropped  [len(dropReasons)]atomic.Int64
}

func kindIndex(t dhcpv4.MessageType) int {
	if int(t) < len(messageKinds) && messageKinds[t] != "" {
		return int(t)
	}
	return otherKind
}

func (c *counters) drop(reason string) {
	for i, r := range dropReasons {
		if r == reason {
			c.dropped[i].Add(1)
			return
		}
	}
}

// Stats is a snapshot of a server's counters and pools.
type Stats struct {
	// Received and Sent count messages by type ("discover", "offer", …,
	// "other"; Sent: the answers made); Dropped counts requests left
	// unanswered for a reason worth an operator's look, by reason.
	Received, Sent, Dropped map[string]int64
	Pools                   []PoolUse
}

// PoolUse is how full one subnet's pool is.
type PoolUse struct {
	Subnet string
	// Size is the pool's addresses; Leased those under an unexpired
	// lease (reserved or not); Offered those held for an OFFER.
	Size, Leased, Offered int
}

// Stats returns the server's counts so far and its pools' use now.
func (s *Server) Stats() Stats {
	st := Stats{Received: map[string]int64{}, Sent: map[string]int64{}, Dropped: map[string]int64{}}
	name := func(i int) string {
		if i == otherKind {
			return "other"
		}
		return messageKinds[i]
	}
	for i := range s.count.received {
		if k := name(i); k != "" {
			st.Received[k] = s.count.received[i].Load()
			st.Sent[k] = s.count.sent[i].Load()
		}
	}
	for i, r := range dropReasons {
		st.Dropped[r] = s.count.dropped[i].Load()
	}
	st.Dropped[DropMalformed] = s.Malformed.Load()
	now := s.cfg.Now()
	for _, p := range s.pools {
		st.Pools = append(st.Pools, p.use(now))
	}
	return st
}

// use counts the pool's addresses and those taken.
func (p *pool) use(now time.Time) PoolUse {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := PoolUse{Subnet: p.prefix(), Size: int(p.end - p.start + 1)}
	if p.inPool(p.server) {
		u.Size--
	}
	for _, b := range p.leases {
		if now.Before(b.expires) {
			u.Leased++
		}
	}
	for _, o := range p.offers {
		if now.Before(o.until) {
			u.Offered++
		}
	}
	return u
}
