package dhcp

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// FuzzWire holds the hot path's decoder and encoder to the library's: for
// any bytes, decode fails where dhcpv4.FromBytes fails and otherwise gives
// the same message, and appendMessage writes what ToBytes writes (after
// whatever the buffer held).
func FuzzWire(f *testing.F) {
	f.Add(discover(mac(1)).ToBytes())
	f.Add(discover(mac(1), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")), dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 2}))).ToBytes())
	f.Add(request(mac(1), net.IPv4(10, 0, 0, 100), dhcpv4.WithOption(dhcpv4.OptHostName("h"))).ToBytes())
	f.Add(relayed(discover(mac(1), pxe(7)...), net.IPv4(10, 1, 0, 1), []byte("c"), []byte("r")).ToBytes())
	long := discover(mac(2), dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(224), bytes.Repeat([]byte{7}, 600))))
	long.ServerHostName, long.BootFileName = "server", "file"
	f.Add(long.ToBytes())
	// an option given twice, a zero-length one, padding, and no end
	twice := discover(mac(3)).ToBytes()
	twice = append(twice[:len(twice)-1], 0, 0, 12, 2, 'a', 'b', 12, 1, 'c', 77, 0, 255)
	f.Add(twice)
	f.Add(twice[:len(twice)-1])
	f.Add(twice[:250])
	f.Add([]byte{1, 1, 6, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		want, werr := dhcpv4.FromBytes(b)
		got, gerr := decode(b)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("FromBytes error %v, decode error %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decode:\n%v\nFromBytes:\n%v", got.Summary(), want.Summary())
		}
		for i := range b {
			b[i] ^= 0xff // the caller reuses its buffer: the message is a copy
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatal("the decoded message changed with the buffer it came from")
		}
		prefix := []byte("before")
		enc := appendMessage(prefix, want)
		if !bytes.HasPrefix(enc, []byte("before")) || !bytes.Equal(enc[len(prefix):], want.ToBytes()) {
			t.Fatalf("appendMessage:\n% x\nToBytes:\n% x", enc[len(prefix):], want.ToBytes())
		}
	})
}

// TestRepliesAsTheLibraryBuildsThem checks the replies built in place
// against the same replies built with the library's option types and
// dhcpv4.NewReplyFromRequest, byte for byte.
func TestRepliesAsTheLibraryBuildsThem(t *testing.T) {
	s, _ := newTestServer(t, newFakeLeases(), func(c *Config) { c.HTTPBootURL = "http://10.0.0.1:8080/boot" })
	s.local.dns = append(s.local.dns, net.IPv4(10, 0, 0, 54))
	ctx := context.Background()
	ip := net.IPv4(10, 0, 0, 100).To4()
	lt := 50*time.Minute + 3*time.Second
	reqs := map[string]*dhcpv4.DHCPv4{
		"plain": discover(mac(1)),
		"client id and relay info": relayed(discover(mac(2), dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 2, 3}))),
			net.IPv4(10, 0, 0, 9), []byte("circuit"), []byte("remote")),
		"iPXE":      discover(mac(3), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))),
		"HTTP boot": discover(mac(4), httpClient(iana.EFI_X86_64_HTTP)...),
		"PXE":       discover(mac(5), pxe(iana.EFI_X86_64)...),
	}
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			// the library's way
			b := s.boot(req)
			mods := []dhcpv4.Modifier{
				dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
				dhcpv4.WithServerIP(s.cfg.ServerIP),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)),
				dhcpv4.WithOption(dhcpv4.OptSubnetMask(s.local.netmask)),
				dhcpv4.WithYourIP(ip),
				dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lt)),
				dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lt / 2)),
				dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8)),
				dhcpv4.WithOption(dhcpv4.OptRouter(s.local.router)),
				dhcpv4.WithOption(dhcpv4.OptDNS(s.local.dns...)),
			}
			if b.file != "" {
				mods = append(mods, func(d *dhcpv4.DHCPv4) { d.BootFileName = b.file }, dhcpv4.WithOption(dhcpv4.OptBootFileName(b.file)))
				if b.class != "" {
					mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(b.class)))
				}
			}
			want, err := dhcpv4.NewReplyFromRequest(req, mods...)
			if err != nil {
				t.Fatal(err)
			}
			got := s.reply(req, s.local, dhcpv4.MessageTypeOffer, ip, lt)
			if !bytes.Equal(appendMessage(nil, got), want.ToBytes()) {
				t.Errorf("reply:\n%v\nthe library's:\n%v", got.Summary(), want.Summary())
			}

			nak, err := dhcpv4.NewReplyFromRequest(req,
				dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)),
				dhcpv4.WithOption(dhcpv4.OptMessage("no")),
				dhcpv4.WithBroadcast(true))
			if err != nil {
				t.Fatal(err)
			}
			if got := s.nak(req, "no"); !bytes.Equal(appendMessage(nil, got), nak.ToBytes()) {
				t.Errorf("NAK:\n%v\nthe library's:\n%v", got.Summary(), nak.Summary())
			}
		})
	}
	// proxyDHCP's answers: boot information, no address
	proxy := newProxy(t)
	guid := append([]byte{0}, bytes.Repeat([]byte{0x42}, 16)...)
	for name, req := range map[string]*dhcpv4.DHCPv4{
		"PXE with a GUID": discover(mac(7), append(pxe(iana.EFI_X86_64), dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid)))...),
		"HTTP boot":       discover(mac(8), httpClient(iana.EFI_X86_64_HTTP)...),
	} {
		b := proxy.boot(req)
		class := b.class
		if class == "" {
			class = "PXEClient"
		}
		mods := []dhcpv4.Modifier{
			dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
			dhcpv4.WithServerIP(proxy.cfg.ServerIP),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(proxy.cfg.ServerIP)),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier(class)),
			func(d *dhcpv4.DHCPv4) { d.BootFileName = b.file },
			dhcpv4.WithOption(dhcpv4.OptBootFileName(b.file)),
		}
		if g := req.GetOneOption(dhcpv4.OptionClientMachineIdentifier); g != nil {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, g)))
		}
		if class == "PXEClient" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255})))
		}
		want, err := dhcpv4.NewReplyFromRequest(req, mods...)
		if err != nil {
			t.Fatal(err)
		}
		got := proxy.proxyReply(req, dhcpv4.MessageTypeOffer)
		if got == nil || !bytes.Equal(appendMessage(nil, got), want.ToBytes()) {
			t.Errorf("%s: proxy reply:\n%v\nthe library's:\n%v", name, got, want.Summary())
		}
	}

	// and what the handler sends for a whole exchange decodes as it should
	offer := s.Handle(ctx, discover(mac(6)))
	back, err := decode(appendMessage(nil, offer))
	if err != nil || msgType(back) != dhcpv4.MessageTypeOffer || !back.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("OFFER through the wire: %v, %v", back, err)
	}
}
