package netboot

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// SendRouterAdverts multicasts an IPv6 router advertisement on ifname every
// interval until ctx ends. The advert carries no prefix and a router
// lifetime of 0 ("no IPv6 router here"), which is harmless to hosts and
// lets iPXE finish IPv6 autoconfiguration at once instead of waiting ~13 s
// before it fetches its boot script. Use it only on a netboot network
// without an IPv6 router of its own.
func SendRouterAdverts(ctx context.Context, ifname string, interval time.Duration, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("router adverts: %w", err)
	}
	conn, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return fmt.Errorf("router adverts: %w", err)
	}
	defer conn.Close()
	pc := conn.IPv6PacketConn()
	body := []byte{
		0, 0, // current hop limit: unspecified; flags: M=0, O=0
		0, 0, // router lifetime 0: not a default router
		0, 0, 0, 0, // reachable time: unspecified
		0, 0, 0, 0, // retransmission timer: unspecified
	}
	msg, err := (&icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: body}}).Marshal(nil)
	if err != nil {
		return err
	}
	dst := &net.IPAddr{IP: net.IPv6linklocalallnodes}
	cm := &ipv6.ControlMessage{IfIndex: ifi.Index, HopLimit: 255}
	t := time.NewTicker(interval)
	defer t.Stop()
	warned := false
	for {
		if _, err := pc.WriteTo(msg, cm, dst); err != nil && !warned {
			// Typical while the interface has no carrier yet; keep trying.
			log.Debug("router advert not sent", "interface", ifname, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
