package main

import (
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/ipv4"
)

// echoFlag runs this program as the echo server.
const (
	echoFlag  = "-echo-server"
	echoReady = "echo: ready"
)

// echoServer answers DISCOVER with OFFER and REQUEST with ACK of an
// address made from the client's MAC, keeping nothing: no pool, no lease,
// no store. It is what perfdhcp itself can drive through the same veth
// pair (the client's ceiling), in batches as Loom's read loop does, with
// the options Loom's answers carry here (perfdhcp's cost per answer grows
// with them: with the lease time alone it drove more than with the renew
// and rebind times too).
func echoServer() error {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: 67})
	if err != nil {
		return err
	}
	pc := ipv4.NewPacketConn(c)
	in := make([]ipv4.Message, 64)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, 1500)}
	}
	out := make([]ipv4.Message, 0, len(in))
	sid := net.IPv4(198, 18, 0, 1)
	mask := net.CIDRMask(15, 32)
	fmt.Println(echoReady)
	for {
		n, err := pc.ReadBatch(in, 0)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, m := range in[:n] {
			req, err := dhcpv4.FromBytes(m.Buffers[0][:m.N])
			if err != nil || len(req.ClientHWAddr) != 6 {
				continue
			}
			t := dhcpv4.MessageTypeOffer
			if req.MessageType() == dhcpv4.MessageTypeRequest {
				t = dhcpv4.MessageTypeAck
			}
			hw := req.ClientHWAddr
			resp, err := dhcpv4.NewReplyFromRequest(req, dhcpv4.WithMessageType(t),
				dhcpv4.WithYourIP(net.IPv4(198, 19, hw[4], hw[5])), dhcpv4.WithServerIP(sid),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid)), dhcpv4.WithOption(dhcpv4.OptSubnetMask(mask)),
				dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
				dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(time.Hour/2)),
				dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(time.Hour*7/8)))
			if err != nil {
				continue
			}
			out = append(out, ipv4.Message{Buffers: [][]byte{resp.ToBytes()}, Addr: &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}})
		}
		for i := 0; i < len(out); {
			k, err := pc.WriteBatch(out[i:], 0)
			i += k
			if err != nil {
				i++
			}
		}
	}
}
