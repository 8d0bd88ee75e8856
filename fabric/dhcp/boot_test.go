package dhcp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/loomfabric/loom/fabric/api"
)

func pxe(arch ...iana.Arch) []dhcpv4.Modifier {
	m := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000"))}
	if len(arch) > 0 {
		m = append(m, dhcpv4.WithOption(dhcpv4.OptClientArch(arch...)))
	}
	return m
}

func httpClient(arch iana.Arch) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
	}
}

// TestFirstStage checks what each firmware is told to boot.
func TestFirstStage(t *testing.T) {
	const httpBase = "http://10.0.0.1:8080/boot"
	for _, tc := range []struct {
		name        string
		mods        []dhcpv4.Modifier
		noTFTP      bool
		noHTTP      bool
		file, class string
	}{
		// No option 60 back to PXE firmware from the server that gives it
		// an address: OVMF then wants PXE boot server discovery.
		{name: "BIOS PXE without option 93", mods: pxe(), file: "undionly.kpxe"},
		{name: "BIOS PXE", mods: pxe(iana.INTEL_X86PC), file: "undionly.kpxe"},
		{name: "UEFI x64 PXE", mods: pxe(iana.EFI_X86_64), file: "ipxe.efi"},
		{name: "UEFI BC PXE", mods: pxe(iana.EFI_BC), file: "ipxe.efi"},
		{name: "arm64 PXE has no first stage", mods: pxe(iana.EFI_ARM64)},
		{name: "PXE without TFTP", mods: pxe(iana.EFI_X86_64), noTFTP: true},
		{name: "UEFI HTTP boot", mods: httpClient(iana.EFI_X86_64_HTTP), file: httpBase + "/ipxe.efi", class: "HTTPClient"},
		{name: "UEFI HTTP boot with TFTP off", mods: httpClient(iana.EFI_X86_64_HTTP), noTFTP: true, file: httpBase + "/ipxe.efi", class: "HTTPClient"},
		{name: "arm64 HTTP boot has no first stage", mods: httpClient(iana.EFI_ARM64_HTTP)},
		{name: "HTTP boot not configured", mods: httpClient(iana.EFI_X86_64_HTTP), noHTTP: true},
		{name: "iPXE gets its script", mods: []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))}, file: "http://10.0.0.1:8080/boot/52:54:00:00:00:01.ipxe"},
		{name: "plain DHCP client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, newFakeLeases(), func(c *Config) {
				c.NoTFTP = tc.noTFTP
				if !tc.noHTTP {
					c.HTTPBootURL = httpBase + "/"
				}
			})
			offer := s.Handle(context.Background(), discover(mac(1), tc.mods...))
			if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("got %v, want an OFFER", offer)
			}
			got := [2]string{offer.BootFileName, offer.ClassIdentifier()}
			if got != [2]string{tc.file, tc.class} {
				t.Errorf("boot file, class = %q, want %q", got, [2]string{tc.file, tc.class})
			}
			if got := dhcpv4.GetString(dhcpv4.OptionBootfileName, offer.Options); got != tc.file {
				t.Errorf("option 67 = %q, want %q", got, tc.file)
			}
		})
	}
}

func newProxy(t *testing.T) *Server {
	t.Helper()
	s, err := New(context.Background(), Config{
		Mode: ModeProxy, ServerIP: net.IPv4(10, 0, 0, 2), Netmask: net.CIDRMask(24, 32),
		HTTPBootURL: "http://10.0.0.2:8080/boot",
		ScriptURL:   func(mac string) string { return "http://10.0.0.2:8080/boot/" + mac + ".ipxe" },
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestProxy checks proxyDHCP: boot information for netboot clients, never
// an address, nothing for anyone else.
func TestProxy(t *testing.T) {
	s := newProxy(t)
	ctx := context.Background()
	guid := append([]byte{0}, make([]byte, 16)...)
	guid[3] = 0x42
	withGUID := append(pxe(iana.EFI_X86_64), dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, guid)))

	offer := s.Handle(ctx, discover(mac(1), withGUID...))
	if offer == nil {
		t.Fatal("PXE DISCOVER: no proxy OFFER")
	}
	if !offer.YourIPAddr.IsUnspecified() {
		t.Errorf("proxy OFFER gives address %v", offer.YourIPAddr)
	}
	if offer.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || offer.Options.Has(dhcpv4.OptionSubnetMask) || offer.Options.Has(dhcpv4.OptionRouter) {
		t.Errorf("proxy OFFER carries address options: %v", offer.Options)
	}
	got := map[string]any{
		"type": offer.MessageType().String(), "file": offer.BootFileName, "class": offer.ClassIdentifier(),
		"server": offer.ServerIdentifier().String(), "siaddr": offer.ServerIPAddr.String(),
		"opt43": offer.GetOneOption(dhcpv4.OptionVendorSpecificInformation), "guid": offer.GetOneOption(dhcpv4.OptionClientMachineIdentifier),
	}
	want := map[string]any{
		"type": "OFFER", "file": "ipxe.efi", "class": "PXEClient", "server": "10.0.0.2", "siaddr": "10.0.0.2",
		"opt43": []byte{6, 1, 8, 255}, "guid": guid,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("proxy OFFER (-want +got):\n%s", diff)
	}

	// Port 4011: the PXE client asks again, from the address it got.
	req := request(mac(1), nil, append(withGUID, dhcpv4.WithClientIP(net.IPv4(10, 0, 0, 150)))...)
	ack := s.handleProxyPort(ctx, req)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "ipxe.efi" || !ack.YourIPAddr.IsUnspecified() {
		t.Errorf("port 4011 REQUEST: got %v, want an ACK with ipxe.efi and no address", ack)
	}
	if r := s.handleProxyPort(ctx, discover(mac(1), pxe()...)); r != nil {
		t.Errorf("port 4011 DISCOVER answered: %v", r)
	}

	// iPXE: the script, with PXEClient so iPXE takes it as a proxy offer.
	o := s.Handle(ctx, discover(mac(2), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))))
	if o == nil || o.BootFileName != "http://10.0.0.2:8080/boot/52:54:00:00:00:02.ipxe" || o.ClassIdentifier() != "PXEClient" {
		t.Errorf("iPXE proxy OFFER = %v", o)
	}
	// HTTP boot: the URL and HTTPClient, no option 43.
	o = s.Handle(ctx, discover(mac(3), httpClient(iana.EFI_X86_64_HTTP)...))
	if o == nil || o.BootFileName != "http://10.0.0.2:8080/boot/ipxe.efi" || o.ClassIdentifier() != "HTTPClient" || o.Options.Has(dhcpv4.OptionVendorSpecificInformation) {
		t.Errorf("HTTP boot proxy OFFER = %v", o)
	}
	// Nobody else gets anything, and REQUESTs on port 67 are the other server's.
	for name, m := range map[string]*dhcpv4.DHCPv4{
		"plain DISCOVER":    discover(mac(4)),
		"PXE REQUEST on 67": request(mac(1), net.IPv4(10, 0, 0, 150), pxe(iana.EFI_X86_64)...),
		"arm64 PXE":         discover(mac(5), pxe(iana.EFI_ARM64)...),
	} {
		if r := s.Handle(ctx, m); r != nil {
			t.Errorf("%s answered: %v", name, r)
		}
	}
}

// TestProxyServe runs the proxy on real sockets: port 67 and port 4011.
func TestProxyServe(t *testing.T) {
	c67, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c4011, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Config{
		Mode: ModeProxy, ServerIP: net.IPv4(127, 0, 0, 1), Netmask: net.CIDRMask(8, 32), Conn: c67, ProxyConn: c4011,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	client, err := net.DialUDP("udp4", nil, c4011.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.Write([]byte{1, 2, 3}) // malformed: dropped, counted
	req := request(mac(1), nil, append(pxe(iana.INTEL_X86PC), dhcpv4.WithClientIP(net.IPv4(127, 0, 0, 1)))...)
	client.Write(req.ToBytes())
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1500)
	n, err := client.Read(b)
	if err != nil {
		t.Fatalf("no answer on the proxy port: %v", err)
	}
	ack, err := dhcpv4.FromBytes(b[:n])
	if err != nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "undionly.kpxe" {
		t.Fatalf("proxy port answered %v (%v), want an ACK with undionly.kpxe", ack, err)
	}
	if s.Malformed.Load() != 1 {
		t.Errorf("malformed count %d, want 1", s.Malformed.Load())
	}

	// A burst, read and answered in batches: every request answered once,
	// to its own transaction, the garbage among them counted and skipped.
	const burst = 200
	client.SetReadBuffer(1 << 20) // the answers come in a burst too
	want := map[dhcpv4.TransactionID]bool{}
	got := make(chan dhcpv4.TransactionID, burst)
	go func() {
		b := make([]byte, 1500)
		for {
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := client.Read(b)
			if err != nil {
				close(got)
				return
			}
			if m, err := dhcpv4.FromBytes(b[:n]); err == nil {
				got <- m.TransactionID
			}
		}
	}()
	for i := range burst {
		req := request(mac(byte(i)), nil, append(pxe(iana.EFI_X86_64), dhcpv4.WithClientIP(net.IPv4(127, 0, 0, 1)))...)
		want[req.TransactionID] = true
		client.Write(req.ToBytes())
		if i%10 == 0 {
			client.Write(make([]byte, 300)) // opcode 0
		}
	}
	for len(want) > 0 {
		xid, ok := <-got
		if !ok {
			t.Fatalf("%d of %d requests of a burst unanswered", len(want), burst)
		}
		if !want[xid] {
			t.Fatalf("answer to transaction %v: not asked, or answered twice", xid)
		}
		delete(want, xid)
	}
	if m := s.Malformed.Load(); m != 1+burst/10 {
		t.Errorf("malformed count %d after the burst, want %d", m, 1+burst/10)
	}
}

func relayedServer(t *testing.T, store *fakeLeases) (*Server, *clock) {
	return newTestServer(t, store, func(c *Config) {
		c.Subnets = []Subnet{
			{Prefix: netip.MustParsePrefix("10.1.0.0/24"), PoolStart: net.IPv4(10, 1, 0, 50), PoolEnd: net.IPv4(10, 1, 0, 60), Router: net.IPv4(10, 1, 0, 254)},
			{Prefix: netip.MustParsePrefix("10.2.0.0/16"), PoolStart: net.IPv4(10, 2, 3, 1), PoolEnd: net.IPv4(10, 2, 3, 9), DNS: []net.IP{net.IPv4(10, 2, 0, 53)}},
		}
		c.Reservations = map[string]net.IP{mac(9).String(): net.IPv4(10, 2, 0, 99)}
	})
}

func relayed(m *dhcpv4.DHCPv4, giaddr net.IP, circuit, remote []byte) *dhcpv4.DHCPv4 {
	m.GatewayIPAddr = giaddr
	m.HopCount = 1
	m.UpdateOption(dhcpv4.OptRelayAgentInfo(
		dhcpv4.OptGeneric(dhcpv4.AgentCircuitIDSubOption, circuit),
		dhcpv4.OptGeneric(dhcpv4.AgentRemoteIDSubOption, remote)))
	return m
}

// TestRelayedSubnets checks that a relayed request gets its own subnet's
// address, mask and router, option 82 back, and a lease that records it.
func TestRelayedSubnets(t *testing.T) {
	store := newFakeLeases()
	s, _ := relayedServer(t, store)
	ctx := context.Background()
	gi := net.IPv4(10, 1, 0, 1)
	offer := s.Handle(ctx, relayed(discover(mac(1)), gi, []byte("rack7-port3"), []byte{0xde, 0xad, 0x00}))
	if offer == nil {
		t.Fatal("relayed DISCOVER: no OFFER")
	}
	got := map[string]string{
		"yiaddr": offer.YourIPAddr.String(), "giaddr": offer.GatewayIPAddr.String(),
		"mask": net.IP(offer.SubnetMask()).String(), "router": offer.Router()[0].String(), "dns": offer.DNS()[0].String(),
		"circuit": string(offer.RelayAgentInfo().Get(dhcpv4.AgentCircuitIDSubOption)),
	}
	want := map[string]string{"yiaddr": "10.1.0.50", "giaddr": "10.1.0.1", "mask": "255.255.255.0", "router": "10.1.0.254", "dns": "10.0.0.53", "circuit": "rack7-port3"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("relayed OFFER (-want +got):\n%s", diff)
	}
	if a := replyAddr(offer, nil).String(); a != "10.1.0.1:67" {
		t.Errorf("reply goes to %s, want the relay at 10.1.0.1:67", a)
	}
	ack := s.Handle(ctx, relayed(request(mac(1), offer.YourIPAddr, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier()))), gi, []byte("rack7-port3"), []byte{0xde, 0xad, 0x00}))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("relayed REQUEST: got %v, want ACK", ack)
	}
	wantLease := api.Lease{MAC: mac(1).String(), IP: "10.1.0.50", Expires: t0.Add(time.Hour),
		Relay: &api.LeaseRelay{GIAddr: "10.1.0.1", CircuitID: "rack7-port3", RemoteID: "dead00"}}
	if diff := cmp.Diff(wantLease, store.leases[mac(1).String()]); diff != "" {
		t.Errorf("stored lease (-want +got):\n%s", diff)
	}

	// The /16 subnet: router defaults to the relay, DNS its own.
	o := s.Handle(ctx, relayed(discover(mac(2)), net.IPv4(10, 2, 200, 1), nil, nil))
	if o == nil || o.YourIPAddr.String() != "10.2.3.1" || o.Router()[0].String() != "10.2.200.1" || o.DNS()[0].String() != "10.2.0.53" || net.IP(o.SubnetMask()).String() != "255.255.0.0" {
		t.Errorf("OFFER in 10.2.0.0/16 = %v", o)
	}
	// A reservation in a relayed subnet.
	if o := s.Handle(ctx, relayed(discover(mac(9)), net.IPv4(10, 2, 0, 1), nil, nil)); o == nil || o.YourIPAddr.String() != "10.2.0.99" {
		t.Errorf("reserved relayed client offered %v, want 10.2.0.99", o)
	}
	// Relays of subnets not served get nothing.
	if r := s.Handle(ctx, relayed(discover(mac(3)), net.IPv4(10, 9, 0, 1), nil, nil)); r != nil {
		t.Errorf("request relayed from 10.9.0.1 answered: %v", r)
	}
	// Local clients draw from the local pool, directly or through a relay
	// on the local subnet (a relay there relays for that subnet).
	if a := exchange(t, s, mac(4)); a.YourIPAddr.String() != "10.0.0.100" {
		t.Errorf("local client got %v, want 10.0.0.100", a.YourIPAddr)
	}
	if o := s.Handle(ctx, relayed(discover(mac(3)), net.IPv4(10, 0, 0, 7), nil, nil)); o == nil || o.YourIPAddr.String() != "10.0.0.101" || o.GatewayIPAddr.String() != "10.0.0.7" {
		t.Errorf("request relayed on the local subnet offered %v, want 10.0.0.101 through 10.0.0.7", o)
	}
	// mac(1) moves to the local subnet: its relayed address is freed.
	exchange(t, s, mac(1))
	p := s.poolOf(ip4(gi))
	p.mu.Lock()
	_, bound := p.owner[ip4(net.IPv4(10, 1, 0, 50))]
	p.mu.Unlock()
	if bound {
		t.Errorf("after mac(1) moved to the local subnet, 10.1.0.50 is still bound to it")
	}
}

// TestRelayedLeasesSurviveRestart loads stored leases into their subnets.
func TestRelayedLeasesSurviveRestart(t *testing.T) {
	store := newFakeLeases(
		api.Lease{MAC: mac(1).String(), IP: "10.1.0.55", Expires: t0.Add(time.Hour), Relay: &api.LeaseRelay{GIAddr: "10.1.0.1"}},
		api.Lease{MAC: mac(2).String(), IP: "10.7.0.5", Expires: t0.Add(time.Hour)}, // subnet no longer served
	)
	s, _ := relayedServer(t, store)
	o := s.Handle(context.Background(), relayed(discover(mac(1)), net.IPv4(10, 1, 0, 1), nil, nil))
	if o == nil || o.YourIPAddr.String() != "10.1.0.55" {
		t.Errorf("after restart mac(1) offered %v, want its lease 10.1.0.55", o)
	}
}

func TestSubnetConfigErrors(t *testing.T) {
	base := func() Config {
		return Config{ServerIP: net.IPv4(10, 0, 0, 1), Netmask: net.CIDRMask(24, 32),
			PoolStart: net.IPv4(10, 0, 0, 100), PoolEnd: net.IPv4(10, 0, 0, 200), Leases: newFakeLeases()}
	}
	sn := func() Subnet {
		return Subnet{Prefix: netip.MustParsePrefix("10.1.0.0/24"), PoolStart: net.IPv4(10, 1, 0, 10), PoolEnd: net.IPv4(10, 1, 0, 20)}
	}
	for name, mod := range map[string]func(*Config){
		"overlaps the local subnet": func(c *Config) {
			s := sn()
			s.Prefix, s.PoolStart, s.PoolEnd = netip.MustParsePrefix("10.0.0.0/16"), net.IPv4(10, 0, 5, 1), net.IPv4(10, 0, 5, 9)
			c.Subnets = []Subnet{s}
		},
		"two subnets overlap": func(c *Config) { c.Subnets = []Subnet{sn(), sn()} },
		"pool outside prefix": func(c *Config) { s := sn(); s.PoolEnd = net.IPv4(10, 1, 1, 20); c.Subnets = []Subnet{s} },
		"router outside prefix": func(c *Config) {
			s := sn()
			s.Router = net.IPv4(10, 3, 0, 1)
			c.Subnets = []Subnet{s}
		},
		"no prefix":   func(c *Config) { s := sn(); s.Prefix = netip.Prefix{}; c.Subnets = []Subnet{s} },
		"IPv6 prefix": func(c *Config) { s := sn(); s.Prefix = netip.MustParsePrefix("fd00::/64"); c.Subnets = []Subnet{s} },
		"reservation in no subnet": func(c *Config) {
			c.Subnets = []Subnet{sn()}
			c.Reservations = map[string]net.IP{mac(1).String(): net.IPv4(10, 4, 0, 5)}
		},
		"unknown mode": func(c *Config) { c.Mode = "relay" },
	} {
		t.Run(name, func(t *testing.T) {
			c := base()
			mod(&c)
			if _, err := New(context.Background(), c, nil); err == nil {
				t.Errorf("New accepted a config with %s", name)
			}
		})
	}
	// Proxy mode needs neither a pool nor a lease store.
	if _, err := New(context.Background(), Config{Mode: ModeProxy, ServerIP: net.IPv4(10, 0, 0, 1), Netmask: net.CIDRMask(24, 32)}, nil); err != nil {
		t.Errorf("proxy mode without a pool: %v", err)
	}
}

func TestParseSubnet(t *testing.T) {
	got, err := ParseSubnet("10.80.0.7/24,pool=10.80.0.100-10.80.0.199,router=10.80.0.1,dns=10.0.0.53;10.0.0.54")
	if err != nil {
		t.Fatal(err)
	}
	want := Subnet{Prefix: netip.MustParsePrefix("10.80.0.0/24"), PoolStart: net.IPv4(10, 80, 0, 100).To4(), PoolEnd: net.IPv4(10, 80, 0, 199).To4(),
		Router: net.IPv4(10, 80, 0, 1).To4(), DNS: []net.IP{net.IPv4(10, 0, 0, 53).To4(), net.IPv4(10, 0, 0, 54).To4()}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("ParseSubnet (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "10.80.0.0/24", "10.80.0.0/24,pool=10.80.0.1", "10.80.0.0/24,pool=a-b", "fd00::/64,pool=1-2",
		"10.80.0.0/24,pool=10.80.0.1-10.80.0.9,gateway=10.80.0.1", "10.80.0.0/24,pool=10.80.0.1-10.80.0.9,router=x", "10.80.0.0/24,pool"} {
		if _, err := ParseSubnet(bad); err == nil {
			t.Errorf("ParseSubnet(%q) accepted", bad)
		}
	}
}
