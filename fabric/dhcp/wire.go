// The wire format on the hot path: a request decoded with one copy of the
// packet and a reply encoded into a buffer the read loop reuses, where
// dhcpv4.FromBytes and ToBytes allocate for every field and option. Both
// give exactly what the library's do (FuzzWire holds them to it); the
// handler still sees dhcpv4.DHCPv4 values.
package dhcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

const (
	headerLen   = 240 // the fixed BOOTP fields and the magic cookie
	bootpMinLen = 300 // RFC 951: some relays drop shorter messages
	optAgent    = 82  // RFC 3046 §2.1: the relay agent option comes last
)

var magicCookie = [4]byte{99, 130, 83, 99}

var errShort = errors.New("malformed DHCP packet: shorter than its fixed fields")

// decode is dhcpv4.FromBytes with one allocation for the packet's bytes:
// addresses, hardware address and option values are slices of one copy
// of q (an option given more than once is joined into a new slice, as
// RFC 3396 says). The caller may reuse q.
func decode(q []byte) (*dhcpv4.DHCPv4, error) {
	if len(q) < headerLen {
		return nil, errShort
	}
	if [4]byte(q[236:240]) != magicCookie {
		return nil, fmt.Errorf("malformed DHCP packet: got magic cookie %v, want %v", q[236:240], magicCookie[:])
	}
	b := make([]byte, len(q))
	copy(b, q)
	hlen := min(int(b[2]), 16)
	p := &dhcpv4.DHCPv4{
		OpCode:         dhcpv4.OpcodeType(b[0]),
		HWType:         iana.HWType(b[1]),
		HopCount:       b[3],
		NumSeconds:     binary.BigEndian.Uint16(b[8:]),
		Flags:          binary.BigEndian.Uint16(b[10:]),
		ClientIPAddr:   net.IP(b[12:16:16]),
		YourIPAddr:     net.IP(b[16:20:20]),
		ServerIPAddr:   net.IP(b[20:24:24]),
		GatewayIPAddr:  net.IP(b[24:28:28]),
		ClientHWAddr:   net.HardwareAddr(b[28 : 28+hlen : 28+hlen]),
		ServerHostName: cString(b[44:108]),
		BootFileName:   cString(b[108:236]),
		Options:        make(dhcpv4.Options, 8),
	}
	copy(p.TransactionID[:], b[4:8])
	o, data := p.Options, b[headerLen:]
	if len(data) == 0 {
		return p, nil // no options at all passes, an unended list does not
	}
	for i := 0; i < len(data); {
		code := data[i]
		i++
		switch code {
		case 0: // pad
			continue
		case 255: // end
			return p, nil
		}
		if i == len(data) {
			return nil, io.ErrUnexpectedEOF
		}
		n := int(data[i])
		i++
		if i+n > len(data) {
			return nil, fmt.Errorf("malformed DHCP packet: option %d wants %d bytes, %d left", code, n, len(data)-i)
		}
		v := data[i : i+n : i+n]
		i += n
		if old, ok := o[code]; ok {
			o[code] = append(old, v...) // old's capacity ends at its end: a new slice
		} else if n == 0 {
			o[code] = nil
		} else {
			o[code] = v
		}
	}
	return nil, io.ErrUnexpectedEOF // no end option
}

// cString is a NUL-terminated field as a string.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return ""
	}
	return string(b)
}

// appendMessage appends d in the wire format to b and returns it: what
// d.ToBytes() gives, with options in ascending order and the relay agent
// option last, without its allocations.
func appendMessage(b []byte, d *dhcpv4.DHCPv4) []byte {
	start := len(b)
	b = append(b, byte(d.OpCode), byte(d.HWType), byte(len(d.ClientHWAddr)), d.HopCount)
	b = append(b, d.TransactionID[:]...)
	b = binary.BigEndian.AppendUint16(b, d.NumSeconds)
	b = binary.BigEndian.AppendUint16(b, d.Flags)
	b = appendIP4(b, d.ClientIPAddr)
	b = appendIP4(b, d.YourIPAddr)
	b = appendIP4(b, d.ServerIPAddr)
	b = appendIP4(b, d.GatewayIPAddr)
	var fixed [16 + 64 + 128]byte
	copy(fixed[:16], d.ClientHWAddr)
	copy(fixed[16:16+63], d.ServerHostName)
	copy(fixed[80:80+127], d.BootFileName)
	b = append(b, fixed[:]...)
	b = append(b, magicCookie[:]...)
	var set [4]uint64
	for c := range d.Options {
		set[c>>6] |= 1 << (c & 63)
	}
	agent := set[optAgent>>6]&(1<<(optAgent&63)) != 0
	set[0] &^= 1       // pad is never written
	set[3] &^= 1 << 63 // nor end, but at the end
	set[optAgent>>6] &^= 1 << (optAgent & 63)
	for w, word := range set {
		for word != 0 {
			c := uint8(w<<6 + bits.TrailingZeros64(word))
			word &= word - 1
			b = appendOption(b, c, d.Options[c])
		}
	}
	if agent {
		b = appendOption(b, optAgent, d.Options[optAgent])
	}
	b = append(b, 255)
	if n := len(b) - start; n < bootpMinLen {
		b = append(b, make([]byte, bootpMinLen-n)...)
	}
	return b
}

// appendOption writes one option, split in 255-byte parts when longer
// (RFC 3396); an empty one is written with length 0.
func appendOption(b []byte, code uint8, v []byte) []byte {
	if len(v) == 0 {
		return append(b, code, 0)
	}
	for len(v) > 0 {
		n := min(len(v), 255)
		b = append(b, code, byte(n))
		b = append(b, v[:n]...)
		v = v[n:]
	}
	return b
}

// appendIP4 writes ip's four bytes, zeros for nil or an address that is
// not IPv4.
func appendIP4(b []byte, ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil {
		return append(b, v4...)
	}
	return append(b, 0, 0, 0, 0)
}

// msgType is d.MessageType() without its allocation.
func msgType(d *dhcpv4.DHCPv4) dhcpv4.MessageType {
	if v := d.Options[uint8(dhcpv4.OptionDHCPMessageType)]; len(v) == 1 {
		return dhcpv4.MessageType(v[0])
	}
	return dhcpv4.MessageTypeNone
}

// optIP is the IPv4 address option c holds, or nil (dhcpv4.GetIP without
// its allocations; the address is the packet's, not a copy).
func optIP(d *dhcpv4.DHCPv4, c dhcpv4.OptionCode) net.IP {
	if v := d.Options[c.Code()]; len(v) == net.IPv4len {
		return net.IP(v[:4:4])
	}
	return nil
}

// options builds a reply's options with their values in one buffer.
type options struct {
	o   dhcpv4.Options
	buf []byte
}

func (ob *options) put(c dhcpv4.OptionCode, v ...byte) {
	start := len(ob.buf)
	ob.buf = append(ob.buf, v...)
	ob.set(c, start)
}

func (ob *options) putString(c dhcpv4.OptionCode, v string) {
	start := len(ob.buf)
	ob.buf = append(ob.buf, v...)
	ob.set(c, start)
}

// putIPs writes addresses as dhcpv4.IPs does (IPv4 only).
func (ob *options) putIPs(c dhcpv4.OptionCode, ips ...net.IP) {
	start := len(ob.buf)
	for _, ip := range ips {
		ob.buf = append(ob.buf, ip.To4()...)
	}
	ob.set(c, start)
}

// set makes what the buffer holds from start on option c's value, its
// capacity ending at its end (later values never write into it).
func (ob *options) set(c dhcpv4.OptionCode, start int) {
	ob.o[c.Code()] = ob.buf[start:len(ob.buf):len(ob.buf)]
}

// putSeconds writes a duration as dhcpv4.Duration does.
func (ob *options) putSeconds(c dhcpv4.OptionCode, d time.Duration) {
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], uint32(d/time.Second))
	ob.put(c, v[:]...)
}
