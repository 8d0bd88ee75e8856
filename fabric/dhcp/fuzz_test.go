package dhcp

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandle feeds arbitrary bytes through the parser and, when they parse,
// the handler: neither may panic, and a reply must encode.
func FuzzHandle(f *testing.F) {
	f.Add(discover(mac(1)).ToBytes())
	f.Add(discover(mac(1), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))).ToBytes())
	f.Add(request(mac(1), net.IPv4(10, 0, 0, 100)).ToBytes())
	f.Add(discover(mac(1), httpClient(16)...).ToBytes())
	f.Add(relayed(discover(mac(1), pxe(7)...), net.IPv4(10, 1, 0, 1), []byte("c"), []byte("r")).ToBytes())
	f.Add([]byte{1, 1, 6, 0})
	s, _ := newTestServer(f, newFakeLeases(), func(c *Config) {
		c.HTTPBootURL = "http://10.0.0.1:8080/boot"
		c.Subnets = []Subnet{{Prefix: netip.MustParsePrefix("10.1.0.0/24"), PoolStart: net.IPv4(10, 1, 0, 50), PoolEnd: net.IPv4(10, 1, 0, 60)}}
	})
	proxy, err := New(context.Background(), Config{Mode: ModeProxy, ServerIP: net.IPv4(10, 0, 0, 2), Netmask: net.CIDRMask(24, 32), HTTPBootURL: "http://x/boot"}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parse(b)
		if err != nil {
			return
		}
		if r := s.Handle(context.Background(), m); r != nil {
			r.ToBytes()
			replyAddr(m, &net.UDPAddr{})
		}
		for _, r := range []*dhcpv4.DHCPv4{proxy.Handle(context.Background(), m), proxy.handleProxyPort(context.Background(), m)} {
			if r != nil {
				r.ToBytes()
			}
		}
	})
}
