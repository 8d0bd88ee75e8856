package loomd

import (
	"net"
	"testing"
)

func TestPoolRange(t *testing.T) {
	for _, tc := range []struct {
		pool, cidr, start, end string
		wantErr                bool
	}{
		{"", "10.77.0.1/24", "10.77.0.100", "10.77.0.199", false},
		{"", "10.77.0.1/16", "10.77.0.100", "10.77.0.199", false},
		{"", "10.77.0.1/28", "10.77.0.1", "10.77.0.14", false},
		{"10.0.0.5-10.0.0.9", "10.0.0.1/24", "10.0.0.5", "10.0.0.9", false},
		{"10.0.0.5", "10.0.0.1/24", "", "", true},
		{"a-b", "10.0.0.1/24", "", "", true},
		{"", "10.0.0.1/31", "", "", true},
	} {
		ip, ipn, _ := net.ParseCIDR(tc.cidr)
		ipn.IP = ip.To4()
		s, e, err := poolRange(tc.pool, ipn)
		if (err != nil) != tc.wantErr {
			t.Errorf("poolRange(%q, %s) error = %v, want error %v", tc.pool, tc.cidr, err, tc.wantErr)
			continue
		}
		if err == nil && (s.String() != tc.start || e.String() != tc.end) {
			t.Errorf("poolRange(%q, %s) = %v-%v, want %s-%s", tc.pool, tc.cidr, s, e, tc.start, tc.end)
		}
	}
}
