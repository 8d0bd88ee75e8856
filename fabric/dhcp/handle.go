package dhcp

import (
	"bytes"
	"context"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/loomfabric/loom/fabric/api"
)

// Handle answers one request; nil means no reply. It never panics on a
// parsed packet, whatever its options hold.
func (s *Server) Handle(ctx context.Context, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	now := s.cfg.Now()
	mac := req.ClientHWAddr.String()
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		s.seen(req)
		ip, err := s.pool.offer(mac, req.RequestedIPAddress(), now)
		if err != nil {
			s.log.Warn("dhcp: no offer", "mac", mac, "err", err)
			return nil
		}
		return s.reply(req, dhcpv4.MessageTypeOffer, ip)

	case dhcpv4.MessageTypeRequest:
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.cfg.ServerIP) {
			s.pool.dropOffer(mac) // it chose another server
			return nil
		}
		ip := req.RequestedIPAddress()
		if ip == nil || ip.IsUnspecified() {
			ip = req.ClientIPAddr
		}
		lease, displaced, err := s.pool.ack(mac, ip, req.HostName(), now)
		if err != nil {
			s.log.Info("dhcp: NAK", "mac", mac, "ip", ip, "reason", err)
			return s.nak(req, err.Error())
		}
		var dels []string
		if displaced != "" {
			dels = []string{displaced}
		}
		if err := s.persist(ctx, commitReq{puts: []api.Lease{lease}, dels: dels}); err != nil {
			// No ACK without a stored lease; the client will retry.
			return nil
		}
		return s.reply(req, dhcpv4.MessageTypeAck, ip)

	case dhcpv4.MessageTypeRelease:
		if l, ok := s.pool.release(mac, req.ClientIPAddr, now); ok {
			_ = s.persist(ctx, commitReq{puts: []api.Lease{l}})
		}
		return nil

	case dhcpv4.MessageTypeDecline:
		ip := req.RequestedIPAddress()
		s.log.Warn("dhcp: address declined (in use by another host?)", "mac", mac, "ip", ip)
		if s.pool.decline(mac, ip, now) {
			_ = s.persist(ctx, commitReq{dels: []string{mac}})
		}
		return nil

	case dhcpv4.MessageTypeInform:
		return s.reply(req, dhcpv4.MessageTypeAck, nil)
	}
	return nil
}

// seen reports netboot clients (PXE or iPXE) to Config.Seen. Plain DHCP
// clients on the same network (BMCs, switches, the maintenance agent's own
// lease) are not machines arriving to be managed.
func (s *Server) seen(req *dhcpv4.DHCPv4) {
	if s.cfg.Seen != nil && clientKind(req) != kindNone {
		s.cfg.Seen(req.ClientHWAddr.String())
	}
}

// reply builds an OFFER or ACK for yiaddr (nil for INFORM).
func (s *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, yiaddr []byte) *dhcpv4.DHCPv4 {
	resp, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithServerIP(s.cfg.ServerIP),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)),
		dhcpv4.WithOption(dhcpv4.OptSubnetMask(s.cfg.Netmask)),
	)
	if err != nil {
		s.log.Error("dhcp: building reply", "err", err)
		return nil
	}
	if yiaddr != nil {
		resp.YourIPAddr = yiaddr
		lt := s.cfg.LeaseTime
		resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
		resp.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))
		resp.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
	}
	if s.cfg.Router != nil {
		resp.UpdateOption(dhcpv4.OptRouter(s.cfg.Router))
	}
	if len(s.cfg.DNS) > 0 {
		resp.UpdateOption(dhcpv4.OptDNS(s.cfg.DNS...))
	}
	if file := s.bootFile(req); file != "" {
		resp.BootFileName = file
		resp.UpdateOption(dhcpv4.OptBootFileName(file))
	}
	return resp
}

func (s *Server) nak(req *dhcpv4.DHCPv4, msg string) *dhcpv4.DHCPv4 {
	resp, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)),
		dhcpv4.WithOption(dhcpv4.OptMessage(msg)),
	)
	if err != nil {
		return nil
	}
	resp.SetBroadcast()
	return resp
}

// Client kinds, as far as booting goes.
const (
	kindNone = iota // not a netboot client
	kindPXE         // firmware PXE: needs the first-stage iPXE binary
	kindIPXE        // iPXE already: give it the script URL
)

// clientKind tells iPXE, PXE firmware and plain DHCP clients apart.
func clientKind(req *dhcpv4.DHCPv4) int {
	if req.Options.Has(dhcpv4.GenericOptionCode(175)) ||
		bytes.Contains(req.GetOneOption(dhcpv4.OptionUserClassInformation), []byte("iPXE")) {
		return kindIPXE
	}
	if strings.HasPrefix(req.ClassIdentifier(), "PXEClient") {
		return kindPXE
	}
	return kindNone
}

// bootFile is the boot file name for a client, or "".
func (s *Server) bootFile(req *dhcpv4.DHCPv4) string {
	switch clientKind(req) {
	case kindIPXE:
		if s.cfg.ScriptURL != nil {
			return s.cfg.ScriptURL(req.ClientHWAddr.String())
		}
	case kindPXE:
		for _, a := range req.ClientArch() {
			if a == iana.EFI_X86_64 || a == iana.EFI_BC || a == iana.EFI_X86_64_HTTP {
				return "ipxe.efi"
			}
		}
		return "undionly.kpxe"
	}
	return ""
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
			s.pool.expireHolds(s.cfg.Now())
		}
	}
}
