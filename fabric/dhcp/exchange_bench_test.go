package dhcp

import (
	"context"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkExchange is the server's own work in one DORA exchange as the
// read loop does it (parse, handle, serialise), for clients that come
// back (their leases reused after the first round), on a fake store. A
// tool to find where the handler's time and allocations go, not a figure:
// bench/dhcp measures the server against others.
func BenchmarkExchange(b *testing.B) {
	s, _ := newTestServer(b, newFakeLeases(), func(c *Config) {
		c.Netmask = net.CIDRMask(16, 32)
		c.PoolStart, c.PoolEnd = net.IPv4(10, 0, 1, 0), net.IPv4(10, 0, 255, 0)
	})
	const clients = 1000
	disc := make([][]byte, clients)
	for i := range disc {
		hw := net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
		m := discover(hw, dhcpv4.WithOption(dhcpv4.OptParameterRequestList(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer)))
		m.GatewayIPAddr = net.IPv4(10, 0, 0, 2)
		disc[i] = m.ToBytes()
	}
	ctx := context.Background()
	reqs := make([][]byte, clients)
	for i, d := range disc {
		req, _ := parse(d)
		offer := s.Handle(ctx, req)
		if offer == nil {
			b.Fatal("no offer")
		}
		r := request(req.ClientHWAddr, offer.YourIPAddr, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)))
		r.GatewayIPAddr = req.GatewayIPAddr
		reqs[i] = r.ToBytes()
	}
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, p := range [][]byte{disc[i%clients], reqs[i%clients]} {
			req, err := parse(p)
			if err != nil {
				b.Fatal(err)
			}
			resp := s.Handle(ctx, req)
			if resp == nil {
				b.Fatal("no answer")
			}
			buf = appendMessage(buf[:0], resp)
		}
	}
}
