package dhcp

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"time"
	"unicode"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// Handle answers one request that came to port 67; nil means no reply. It
// never panics on a parsed packet, whatever its options hold.
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if s.cfg.Mode == ModeProxy {
		if msgType(req) != dhcpv4.MessageTypeDiscover {
			return nil // the DHCP server that owns the addresses answers the rest
		}
		s.seen(req)
		return s.proxyReply(req, dhcpv4.MessageTypeOffer)
	}
	now := s.cfg.Now()
	mac := req.ClientHWAddr.String()
	p := s.poolFor(req)
	if p == nil {
		return nil
	}
	switch msgType(req) {
	case dhcpv4.MessageTypeDiscover:
		s.seen(req)
		ip, err := p.offer(mac, optIP(req, dhcpv4.OptionRequestedIPAddress), now)
		if err != nil {
			s.count.drop(DropNoAddress)
			s.log.Warn("dhcp: no offer", "mac", mac, "subnet", p.prefix(), "err", err)
			return nil
		}
		return s.reply(req, p, dhcpv4.MessageTypeOffer, ip, s.cfg.LeaseTime)

	case dhcpv4.MessageTypeRequest:
		if sid := optIP(req, dhcpv4.OptionServerIdentifier); sid != nil && !sid.Equal(s.cfg.ServerIP) {
			p.dropOffer(mac) // it chose another server
			s.count.drop(DropOtherServer)
			return nil
		}
		ip := optIP(req, dhcpv4.OptionRequestedIPAddress)
		if ip == nil || ip.IsUnspecified() {
			ip = req.ClientIPAddr
		}
		lease, prev, reused, err := p.ack(mac, ip, req.HostName(), relayOf(req), now, s.cfg.LeaseReuse)
		if err != nil {
			s.log.Info("dhcp: NAK", "mac", mac, "ip", ip, "reason", err)
			return s.nak(req, err.Error())
		}
		if reused {
			// the time the stored lease has left, in whole seconds rounded
			// down: the client's lease never outlasts the stored one
			return s.reply(req, p, dhcpv4.MessageTypeAck, ip, lease.Expires.Sub(now).Truncate(time.Second))
		}
		for _, q := range s.pools {
			if q != p {
				q.forget(mac) // it moved subnets; its old address is free
			}
		}
		var dels []api.Lease
		if prev != "" && prev != mac {
			dels = []api.Lease{{MAC: prev}} // displaced: its claim passes to mac
		}
		err = s.persist(ctx, commitReq{puts: []store.LeaseWrite{{Lease: lease, Prev: prev}}, dels: dels})
		var lost *conflictError
		if errors.As(err, &lost) {
			// Another server (a replica) leased the address meanwhile:
			// learn its lease, and the client starts over.
			p.forget(mac)
			s.learn(ctx, lost.Holder)
			s.log.Info("dhcp: NAK", "mac", mac, "ip", ip, "reason", err)
			return s.nak(req, err.Error())
		}
		if err != nil {
			// No ACK without a stored lease; the client will retry.
			s.count.drop(DropNotLeased)
			return nil
		}
		p.stored(lease)
		return s.reply(req, p, dhcpv4.MessageTypeAck, ip, s.cfg.LeaseTime)

	case dhcpv4.MessageTypeRelease:
		if l, ok := p.release(mac, req.ClientIPAddr, now); ok {
			_ = s.persist(ctx, commitReq{puts: []store.LeaseWrite{{Lease: l, Prev: mac}}})
		}
		return nil

	case dhcpv4.MessageTypeDecline:
		ip := optIP(req, dhcpv4.OptionRequestedIPAddress)
		s.log.Warn("dhcp: address declined (in use by another host?)", "mac", mac, "ip", ip)
		if p.decline(mac, ip, now) {
			_ = s.persist(ctx, commitReq{dels: []api.Lease{{MAC: mac, IP: ip.String()}}})
		}
		return nil

	case dhcpv4.MessageTypeInform:
		return s.reply(req, p, dhcpv4.MessageTypeAck, nil, 0)
	}
	return nil
}

// learn loads another server's lease of mac into the pools.
func (s *Server) learn(ctx context.Context, mac string) {
	if mac == "" {
		return
	}
	l, err := s.cfg.Leases.Lease(ctx, mac)
	if err == nil {
		err = s.load(l)
	}
	if err != nil {
		s.log.Warn("dhcp: learning another server's lease", "mac", mac, "err", err)
	}
}

// poolFor is the pool a request draws from: the subnet of its relay
// (giaddr), or the interface's own. A relay on the interface's own subnet
// relays for clients on it (RFC 2131 §4.3.1: giaddr names the client's
// subnet); a relay of a subnet not served gets nothing.
func (s *Server) poolFor(req *dhcpv4.DHCPv4) *pool {
	gi := req.GatewayIPAddr
	if gi == nil || gi.IsUnspecified() {
		return s.local
	}
	p := s.poolOf(ip4(gi))
	if p == nil {
		s.count.drop(DropUnknownRelay)
		if s.unknownRelay.Add(1)%100 == 1 {
			s.log.Warn("dhcp: ignoring request relayed from a subnet not served (add it with --subnet)", "giaddr", gi, "mac", req.ClientHWAddr, "count", s.unknownRelay.Load())
		}
		return nil
	}
	return p
}

// handleProxyPort answers a PXE client's request to proxyDHCP port 4011.
func (s *Server) handleProxyPort(_ context.Context, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	switch msgType(req) {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
		return s.proxyReply(req, dhcpv4.MessageTypeAck)
	}
	return nil
}

// proxyReply is a proxyDHCP answer: boot information and no address.
func (s *Server) proxyReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	b := s.boot(req)
	if b.file == "" {
		s.count.drop(DropNoBootFile)
		return nil
	}
	class := b.class
	if class == "" {
		class = "PXEClient" // how iPXE tells a proxy offer from a plain one
	}
	resp, ob := newReply(req, mt, 16+len(class)+len(b.file))
	resp.ServerIPAddr = s.cfg.ServerIP
	ob.putIPs(dhcpv4.OptionServerIdentifier, s.cfg.ServerIP)
	ob.putString(dhcpv4.OptionClassIdentifier, class)
	resp.BootFileName = b.file
	ob.putString(dhcpv4.OptionBootfileName, b.file)
	if guid := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); guid != nil {
		ob.o[dhcpv4.OptionClientMachineIdentifier.Code()] = guid
	}
	if class == "PXEClient" {
		// PXE_DISCOVERY_CONTROL (sub-option 6) = 8: boot the file named here.
		ob.put(dhcpv4.OptionVendorSpecificInformation, 6, 1, 8, 255)
	}
	return resp
}

// seen reports netboot clients (PXE or iPXE) to Config.Seen. Plain DHCP
// clients on the same network (BMCs, switches, the maintenance agent's own
// lease) are not machines arriving to be managed.
func (s *Server) seen(req *dhcpv4.DHCPv4) {
	if s.cfg.Seen != nil && clientKind(req) != kindNone {
		s.cfg.Seen(req.ClientHWAddr.String())
	}
}

// reply builds an OFFER or ACK for yiaddr (nil for INFORM) from pool p,
// with a lease of lt.
func (s *Server) reply(req *dhcpv4.DHCPv4, p *pool, mt dhcpv4.MessageType, yiaddr []byte, lt time.Duration) *dhcpv4.DHCPv4 {
	b := s.boot(req)
	resp, ob := newReply(req, mt, 48+4*len(p.dns)+len(b.file)+len(b.class))
	resp.ServerIPAddr = s.cfg.ServerIP
	ob.putIPs(dhcpv4.OptionServerIdentifier, s.cfg.ServerIP)
	ob.put(dhcpv4.OptionSubnetMask, p.netmask...) // always 4 bytes (newPool's callers)
	if yiaddr != nil {
		resp.YourIPAddr = yiaddr
		ob.putSeconds(dhcpv4.OptionIPAddressLeaseTime, lt)
		ob.putSeconds(dhcpv4.OptionRenewTimeValue, lt/2)
		ob.putSeconds(dhcpv4.OptionRebindingTimeValue, lt*7/8)
	}
	router := p.router
	if router == nil && p != s.local {
		router = req.GatewayIPAddr // the relay routes for its subnet
	}
	if router != nil {
		ob.putIPs(dhcpv4.OptionRouter, router)
	}
	if len(p.dns) > 0 {
		ob.putIPs(dhcpv4.OptionDomainNameServer, p.dns...)
	}
	if b.file != "" {
		resp.BootFileName = b.file
		ob.putString(dhcpv4.OptionBootfileName, b.file)
		if b.class != "" {
			ob.putString(dhcpv4.OptionClassIdentifier, b.class)
		}
	}
	return resp
}

func (s *Server) nak(req *dhcpv4.DHCPv4, msg string) *dhcpv4.DHCPv4 {
	resp, ob := newReply(req, dhcpv4.MessageTypeNak, 8+len(msg))
	ob.putIPs(dhcpv4.OptionServerIdentifier, s.cfg.ServerIP)
	ob.putString(dhcpv4.OptionMessage, msg)
	resp.SetBroadcast()
	return resp
}

// newReply is dhcpv4.NewReplyFromRequest without its random transaction
// ID (drawn from crypto/rand under a context with a timeout, then
// overwritten with the request's) and with options built in place: a
// reply of type mt to req, its relay agent information (option 82) and
// client identifier (option 61, RFC 6842) copied, and a builder for the
// rest with room for size bytes of values.
func newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, size int) (*dhcpv4.DHCPv4, options) {
	d := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		ClientHWAddr:  req.ClientHWAddr,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: req.GatewayIPAddr,
		Options:       make(dhcpv4.Options, 8),
	}
	if d.GatewayIPAddr == nil {
		d.GatewayIPAddr = net.IPv4zero
	}
	for _, o := range [...]dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.Options.Get(o); v != nil {
			d.Options[o.Code()] = v
		}
	}
	ob := options{o: d.Options, buf: make([]byte, 0, size+1)}
	ob.put(dhcpv4.OptionDHCPMessageType, byte(mt))
	return d, ob
}

// relayOf reads a relayed request's giaddr and option 82, or nil.
func relayOf(req *dhcpv4.DHCPv4) *api.LeaseRelay {
	gi := req.GatewayIPAddr
	if gi == nil || gi.IsUnspecified() {
		return nil
	}
	r := &api.LeaseRelay{GIAddr: gi.String()}
	if ri := req.RelayAgentInfo(); ri != nil {
		r.CircuitID = printable(ri.Get(dhcpv4.AgentCircuitIDSubOption))
		r.RemoteID = printable(ri.Get(dhcpv4.AgentRemoteIDSubOption))
	}
	return r
}

// printable is b as text if it is printable, else as hex.
func printable(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	for _, r := range string(b) {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return hex.EncodeToString(b)
		}
	}
	return string(b)
}

// Client kinds, as far as booting goes.
const (
	kindNone = iota // not a netboot client
	kindPXE         // firmware PXE: needs the first-stage iPXE binary over TFTP
	kindHTTP        // UEFI HTTP boot: needs the first stage's http:// URL
	kindIPXE        // iPXE already: give it the script URL
)

// clientKind tells iPXE, PXE and HTTP boot firmware and plain DHCP clients
// apart.
func clientKind(req *dhcpv4.DHCPv4) int {
	if req.Options.Has(dhcpv4.GenericOptionCode(175)) ||
		bytes.Contains(req.GetOneOption(dhcpv4.OptionUserClassInformation), []byte("iPXE")) {
		return kindIPXE
	}
	switch vc := req.ClassIdentifier(); {
	case strings.HasPrefix(vc, "PXEClient"):
		return kindPXE
	case strings.HasPrefix(vc, "HTTPClient"):
		return kindHTTP
	}
	return kindNone
}

// bootInfo is what a client is told to boot: a file and the vendor class
// (option 60) the reply carries ("" for none; a proxy reply says
// "PXEClient" then). HTTP boot firmware needs "HTTPClient" back. PXE
// firmware gets no class from the server that also gives it an address:
// told "PXEClient" there, OVMF expects PXE vendor options and boot server
// discovery too, and rejects the offer without them.
type bootInfo struct{ file, class string }

// boot says what a client boots, if anything.
func (s *Server) boot(req *dhcpv4.DHCPv4) bootInfo {
	switch clientKind(req) {
	case kindIPXE:
		if s.cfg.ScriptURL != nil {
			return bootInfo{file: s.cfg.ScriptURL(req.ClientHWAddr.String())}
		}
	case kindPXE:
		if s.cfg.NoTFTP {
			return bootInfo{}
		}
		for _, a := range archs(req) {
			switch a {
			case iana.EFI_X86_64, iana.EFI_BC:
				return bootInfo{file: "ipxe.efi"}
			case iana.INTEL_X86PC:
				return bootInfo{file: "undionly.kpxe"}
			}
		}
		s.noFirstStage(req)
	case kindHTTP:
		if s.cfg.HTTPBootURL == "" {
			return bootInfo{}
		}
		for _, a := range archs(req) {
			if a == iana.EFI_X86_64_HTTP {
				return bootInfo{file: strings.TrimRight(s.cfg.HTTPBootURL, "/") + "/ipxe.efi", class: "HTTPClient"}
			}
		}
		s.noFirstStage(req)
	}
	return bootInfo{}
}

// archs is the client's architectures (option 93); a PXE client that sends
// none is a BIOS one (RFC 4578 §2.1).
func archs(req *dhcpv4.DHCPv4) []iana.Arch {
	if a := req.ClientArch(); len(a) > 0 {
		return a
	}
	return []iana.Arch{iana.INTEL_X86PC}
}

// noFirstStage logs, now and then, a firmware Loom has no first stage for.
func (s *Server) noFirstStage(req *dhcpv4.DHCPv4) {
	if s.unknownArch.Add(1)%100 == 1 {
		s.log.Warn("dhcp: no first stage for this client's architecture (x86-64 BIOS and UEFI only)", "mac", req.ClientHWAddr, "arch", req.ClientArch(), "class", req.ClassIdentifier())
	}
}

// expireLoop forgets run-out offers and quarantines now and then.
func (s *Server) expireLoop(ctx context.Context) error {
	t := time.NewTicker(s.cfg.OfferHold)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			for _, p := range s.pools {
				p.expireHolds(s.cfg.Now())
			}
		}
	}
}
