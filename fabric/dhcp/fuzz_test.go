package dhcp

import (
	"context"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandle feeds arbitrary bytes through the parser and, when they parse,
// the handler: neither may panic, and a reply must encode.
func FuzzHandle(f *testing.F) {
	f.Add(discover(mac(1)).ToBytes())
	f.Add(discover(mac(1), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))).ToBytes())
	f.Add(request(mac(1), net.IPv4(10, 0, 0, 100)).ToBytes())
	f.Add([]byte{1, 1, 6, 0})
	s, _ := newTestServer(f, newFakeLeases(), nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parse(b)
		if err != nil {
			return
		}
		if r := s.Handle(context.Background(), m); r != nil {
			r.ToBytes()
			replyAddr(m, &net.UDPAddr{})
		}
	})
}
