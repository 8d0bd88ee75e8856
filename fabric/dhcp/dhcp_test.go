package dhcp

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// fakeLeases is an in-memory LeaseStore that counts its transactions.
type fakeLeases struct {
	mu     sync.Mutex
	leases map[string]api.Lease
	txns   int
	fail   error
	claims map[string]string // IP → MAC
}

func newFakeLeases(ls ...api.Lease) *fakeLeases {
	f := &fakeLeases{leases: map[string]api.Lease{}}
	for _, l := range ls {
		f.leases[l.MAC] = l
	}
	return f
}

func (f *fakeLeases) Leases(context.Context) ([]api.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []api.Lease
	for _, l := range f.leases {
		out = append(out, l)
	}
	return out, nil
}

// ClaimLeases keeps the store's rule: an address's claim passes from
// Prev, or is taken when absent, or kept by its own MAC.
func (f *fakeLeases) ClaimLeases(_ context.Context, puts []store.LeaseWrite, dels []api.Lease) ([]store.LeaseConflict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	if f.claims == nil {
		f.claims = map[string]string{}
	}
	f.txns++
	var out []store.LeaseConflict
	for i, w := range puts {
		l := w.Lease
		h, ok := f.claims[l.IP]
		if ok && h != l.MAC && (w.Prev == "" || h != w.Prev) {
			out = append(out, store.LeaseConflict{Index: i, IP: l.IP, Holder: h})
			continue
		}
		f.claims[l.IP] = l.MAC
		f.leases[l.MAC] = l
	}
	for _, l := range dels {
		delete(f.leases, l.MAC)
		if l.IP != "" && f.claims[l.IP] == l.MAC {
			delete(f.claims, l.IP)
		}
	}
	return out, nil
}

func (f *fakeLeases) Lease(_ context.Context, mac string) (api.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.leases[mac]
	if !ok {
		return l, store.ErrNotFound
	}
	return l, nil
}

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// newTestServer starts a server (committer running) on a fake store.
func newTestServer(t testing.TB, store *fakeLeases, mod func(*Config)) (*Server, *clock) {
	t.Helper()
	clk := &clock{t: t0}
	cfg := Config{
		ServerIP: net.IPv4(10, 0, 0, 1), Netmask: net.CIDRMask(24, 32),
		PoolStart: net.IPv4(10, 0, 0, 100), PoolEnd: net.IPv4(10, 0, 0, 102),
		Router: net.IPv4(10, 0, 0, 1), DNS: []net.IP{net.IPv4(10, 0, 0, 53)},
		LeaseTime: time.Hour, Leases: store, Now: clk.now,
		ScriptURL: func(mac string) string { return "http://10.0.0.1:8080/boot/" + mac + ".ipxe" },
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.committer(ctx)
	return s, clk
}

func mac(i byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0, i} }

func discover(hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.NewDiscovery(hw, mods...)
	if err != nil {
		panic(err)
	}
	return m
}

func request(hw net.HardwareAddr, ip net.IP, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(hw),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)),
	}, mods...)...)
	if err != nil {
		panic(err)
	}
	return m
}

// exchange runs DISCOVER then REQUEST for what was offered and returns the ACK.
func exchange(t *testing.T, s *Server, hw net.HardwareAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	ctx := context.Background()
	offer := s.Handle(ctx, discover(hw))
	if offer == nil {
		t.Fatalf("DISCOVER from %s: no OFFER", hw)
	}
	ack := s.Handle(ctx, request(hw, offer.YourIPAddr, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier()))))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST from %s for %v: got %v, want ACK", hw, offer.YourIPAddr, ack)
	}
	return ack
}

func TestHandle(t *testing.T) {
	ctx := context.Background()
	type result struct {
		Type     string
		YourIP   string
		BootFile string
	}
	res := func(m *dhcpv4.DHCPv4) result {
		if m == nil {
			return result{Type: "none"}
		}
		r := result{Type: m.MessageType().String(), BootFile: m.BootFileName}
		if m.YourIPAddr != nil && !m.YourIPAddr.IsUnspecified() {
			r.YourIP = m.YourIPAddr.String()
		}
		return r
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, s *Server)
		req   *dhcpv4.DHCPv4
		want  result
	}{
		{
			name: "plain DHCP client gets an address and no boot file",
			req:  discover(mac(1)),
			want: result{Type: "OFFER", YourIP: "10.0.0.100"},
		},
		{
			name: "iPXE by user class gets its script URL",
			req:  discover(mac(1), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))),
			want: result{Type: "OFFER", YourIP: "10.0.0.100", BootFile: "http://10.0.0.1:8080/boot/52:54:00:00:00:01.ipxe"},
		},
		{
			name: "iPXE by option 175 gets its script URL",
			req:  discover(mac(1), dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{1, 1, 1})),
			want: result{Type: "OFFER", YourIP: "10.0.0.100", BootFile: "http://10.0.0.1:8080/boot/52:54:00:00:00:01.ipxe"},
		},
		{
			name: "BIOS PXE firmware gets the first-stage iPXE",
			req:  discover(mac(1), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))),
			want: result{Type: "OFFER", YourIP: "10.0.0.100", BootFile: "undionly.kpxe"},
		},
		{
			name: "UEFI PXE firmware gets ipxe.efi",
			req: discover(mac(1), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
				dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64))),
			want: result{Type: "OFFER", YourIP: "10.0.0.100", BootFile: "ipxe.efi"},
		},
		{
			name: "requested free address is honoured",
			req:  discover(mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 0, 102)))),
			want: result{Type: "OFFER", YourIP: "10.0.0.102"},
		},
		{
			name: "requested address outside the pool is ignored",
			req:  discover(mac(1), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 0, 0, 7)))),
			want: result{Type: "OFFER", YourIP: "10.0.0.100"},
		},
		{
			name: "request for an address leased to another client is NAKed",
			setup: func(t *testing.T, s *Server) {
				exchange(t, s, mac(2)) // gets .100
			},
			req:  request(mac(1), net.IPv4(10, 0, 0, 100)),
			want: result{Type: "NAK"},
		},
		{
			name: "request outside the subnet is NAKed",
			req:  request(mac(1), net.IPv4(192, 168, 1, 5)),
			want: result{Type: "NAK"},
		},
		{
			name: "request naming another server is ignored",
			req:  request(mac(1), net.IPv4(10, 0, 0, 100), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 0, 2)))),
			want: result{Type: "none"},
		},
		{
			name: "pool exhaustion: no offer",
			setup: func(t *testing.T, s *Server) {
				for i := byte(10); i < 13; i++ {
					exchange(t, s, mac(i))
				}
			},
			req:  discover(mac(1)),
			want: result{Type: "none"},
		},
		{
			name: "an offer is held: the next client gets another address",
			setup: func(t *testing.T, s *Server) {
				if o := s.Handle(ctx, discover(mac(9))); o == nil || !o.YourIPAddr.Equal(net.IPv4(10, 0, 0, 100)) {
					t.Fatalf("first offer = %v", o)
				}
			},
			req:  discover(mac(1)),
			want: result{Type: "OFFER", YourIP: "10.0.0.101"},
		},
		{
			name: "INFORM is answered without an address",
			req: func() *dhcpv4.DHCPv4 {
				m, _ := dhcpv4.NewInform(mac(1), net.IPv4(10, 0, 0, 50))
				return m
			}(),
			want: result{Type: "ACK"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, newFakeLeases(), nil)
			if tc.setup != nil {
				tc.setup(t, s)
			}
			if diff := cmp.Diff(tc.want, res(s.Handle(ctx, tc.req))); diff != "" {
				t.Errorf("Handle(%s) (-want +got):\n%s", tc.req.MessageType(), diff)
			}
		})
	}
}

func TestReplyOptions(t *testing.T) {
	s, _ := newTestServer(t, newFakeLeases(), nil)
	ack := exchange(t, s, mac(1))
	got := map[string]string{
		"mask":   net.IP(ack.SubnetMask()).String(),
		"router": ack.Router()[0].String(),
		"dns":    ack.DNS()[0].String(),
		"lease":  ack.IPAddressLeaseTime(0).String(),
		"server": ack.ServerIdentifier().String(),
	}
	want := map[string]string{"mask": "255.255.255.0", "router": "10.0.0.1", "dns": "10.0.0.53", "lease": "1h0m0s", "server": "10.0.0.1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ACK options (-want +got):\n%s", diff)
	}
}

func TestLeasePersistedBeforeAck(t *testing.T) {
	store := newFakeLeases()
	s, _ := newTestServer(t, store, nil)
	ack := exchange(t, s, mac(1))
	l, ok := store.leases[mac(1).String()]
	if !ok || l.IP != ack.YourIPAddr.String() {
		t.Fatalf("store after ACK of %v: lease = %+v (present %v)", ack.YourIPAddr, l, ok)
	}
	if want := t0.Add(time.Hour); !l.Expires.Equal(want) {
		t.Errorf("lease expiry = %v, want %v", l.Expires, want)
	}

	// A failing store means no ACK.
	store.fail = errors.New("disk on fire")
	offer := s.Handle(context.Background(), discover(mac(2)))
	if got := s.Handle(context.Background(), request(mac(2), offer.YourIPAddr)); got != nil {
		t.Errorf("REQUEST with a failing store = %v, want no reply", got.MessageType())
	}
}

func TestSameAddressAfterRestart(t *testing.T) {
	store := newFakeLeases()
	s1, _ := newTestServer(t, store, nil)
	exchange(t, s1, mac(1))
	first := exchange(t, s1, mac(2)).YourIPAddr

	s2, _ := newTestServer(t, store, nil) // a restarted loomd
	if got := exchange(t, s2, mac(2)).YourIPAddr; !got.Equal(first) {
		t.Errorf("after restart %s got %v, want its old %v", mac(2), got, first)
	}
	// A new client must not get an address that is still leased.
	if got := exchange(t, s2, mac(3)).YourIPAddr; got.Equal(first) || got.Equal(net.IPv4(10, 0, 0, 100)) {
		t.Errorf("new client got %v, which is leased to another", got)
	}
}

func TestExpiredLeaseIsReused(t *testing.T) {
	store := newFakeLeases()
	s, clk := newTestServer(t, store, nil)
	for i := byte(1); i <= 3; i++ {
		exchange(t, s, mac(i))
	}
	if o := s.Handle(context.Background(), discover(mac(4))); o != nil {
		t.Fatalf("full pool offered %v", o.YourIPAddr)
	}
	clk.t = clk.t.Add(2 * time.Hour) // every lease has expired
	ack := exchange(t, s, mac(4))
	if _, ok := store.leases[mac(4).String()]; !ok {
		t.Fatalf("new lease of %s not stored", mac(4))
	}
	n := 0
	for _, l := range store.leases {
		if l.IP == ack.YourIPAddr.String() {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d stored leases hold %v, want exactly 1 (the displaced one must go)", n, ack.YourIPAddr)
	}
}

func TestReleaseAndDecline(t *testing.T) {
	ctx := context.Background()
	store := newFakeLeases()
	s, _ := newTestServer(t, store, nil)
	ip := exchange(t, s, mac(1)).YourIPAddr

	rel, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithClientIP(ip))
	if r := s.Handle(ctx, rel); r != nil {
		t.Errorf("RELEASE answered with %v", r.MessageType())
	}
	if l := store.leases[mac(1).String()]; !l.Expires.Equal(t0) {
		t.Errorf("released lease expires %v, want now (%v)", l.Expires, t0)
	}
	// The same client gets its address back.
	if got := exchange(t, s, mac(1)).YourIPAddr; !got.Equal(ip) {
		t.Errorf("after release got %v, want %v again", got, ip)
	}

	dec, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)))
	s.Handle(ctx, dec)
	if _, ok := store.leases[mac(1).String()]; ok {
		t.Errorf("declined lease still stored")
	}
	if o := s.Handle(ctx, discover(mac(1))); o == nil || o.YourIPAddr.Equal(ip) {
		t.Errorf("after DECLINE of %v the client was offered %v, want another address", ip, o)
	}
}

func TestReservation(t *testing.T) {
	s, _ := newTestServer(t, newFakeLeases(), func(c *Config) {
		c.Reservations = map[string]net.IP{mac(7).String(): net.IPv4(10, 0, 0, 20)}
	})
	if got := exchange(t, s, mac(7)).YourIPAddr; !got.Equal(net.IPv4(10, 0, 0, 20)) {
		t.Errorf("reserved client got %v, want 10.0.0.20", got)
	}
	if r := s.Handle(context.Background(), request(mac(1), net.IPv4(10, 0, 0, 20))); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("another client asking for the reserved address: got %v, want NAK", r)
	}
}

func TestConfigErrors(t *testing.T) {
	base := func() Config {
		return Config{ServerIP: net.IPv4(10, 0, 0, 1), Netmask: net.CIDRMask(24, 32),
			PoolStart: net.IPv4(10, 0, 0, 100), PoolEnd: net.IPv4(10, 0, 0, 200), Leases: newFakeLeases()}
	}
	for name, mod := range map[string]func(*Config){
		"pool outside subnet":    func(c *Config) { c.PoolEnd = net.IPv4(10, 0, 1, 5) },
		"pool reversed":          func(c *Config) { c.PoolStart, c.PoolEnd = c.PoolEnd, c.PoolStart },
		"bad reservation MAC":    func(c *Config) { c.Reservations = map[string]net.IP{"nope": net.IPv4(10, 0, 0, 5)} },
		"reservation off subnet": func(c *Config) { c.Reservations = map[string]net.IP{mac(1).String(): net.IPv4(10, 9, 0, 5)} },
		"no lease store":         func(c *Config) { c.Leases = nil },
		"reservation on server":  func(c *Config) { c.Reservations = map[string]net.IP{mac(1).String(): net.IPv4(10, 0, 0, 1)} },
	} {
		t.Run(name, func(t *testing.T) {
			c := base()
			mod(&c)
			if _, err := New(context.Background(), c, nil); err == nil {
				t.Errorf("New accepted a config with %s", name)
			}
		})
	}
}

// TestServeSurvivesMalformed sends garbage and then a real DISCOVER over a
// UDP socket: the garbage is counted, the DISCOVER answered.
func TestServeSurvivesMalformed(t *testing.T) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	store := newFakeLeases()
	s, _ := newTestServer(t, store, func(c *Config) { c.Conn = conn })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	// Replies go to 255.255.255.255:68, which a test cannot receive, so
	// this test checks the server's state instead.
	client, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	bad := [][]byte{
		{},
		{1, 2, 3},
		make([]byte, 300), // all zero: opcode 0
		append(discover(mac(1)).ToBytes()[:240], 53, 200), // option runs off the end
	}
	for _, b := range bad {
		client.Write(b)
	}
	client.Write(discover(mac(5)).ToBytes())
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.local.mu.Lock()
		_, offered := s.local.offerOf[mac(5).String()]
		s.local.mu.Unlock()
		if offered && s.Malformed.Load() >= int64(len(bad)-1) {
			st := s.Stats()
			if st.Received["discover"] != 1 || st.Sent["offer"] != 1 || st.Dropped[DropMalformed] != s.Malformed.Load() || st.Dropped[DropNoAddress] != 0 {
				t.Errorf("stats: received %v, sent %v, dropped %v; want one discover, one offer, the malformed", st.Received, st.Sent, st.Dropped)
			}
			if len(st.Pools) != 1 || st.Pools[0].Offered != 1 || st.Pools[0].Leased != 0 || st.Pools[0].Size < 2 {
				t.Errorf("pool use %+v, want one offer", st.Pools)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("after %d malformed packets and a DISCOVER: malformed=%d, DISCOVER handled=%v", len(bad), s.Malformed.Load(), false)
}

func TestGroupCommit(t *testing.T) {
	store := newFakeLeases()
	s, _ := newTestServer(t, store, func(c *Config) { c.PoolEnd = net.IPv4(10, 0, 0, 250) })
	// Hold the store so that concurrent requests queue up behind one commit.
	store.mu.Lock()
	var wg sync.WaitGroup
	for i := byte(1); i <= 100; i++ {
		offer := s.Handle(context.Background(), discover(mac(i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Handle(context.Background(), request(mac(i), offer.YourIPAddr))
		}()
	}
	time.Sleep(200 * time.Millisecond)
	store.mu.Unlock()
	wg.Wait()
	if len(store.leases) != 100 {
		t.Fatalf("%d leases stored, want 100", len(store.leases))
	}
	if store.txns > 10 {
		t.Errorf("100 concurrent ACKs took %d store transactions, want them batched (≤ 10)", store.txns)
	}
}

func TestSeenOnlyNetbootClients(t *testing.T) {
	var seen []string
	s, _ := newTestServer(t, newFakeLeases(), func(c *Config) { c.Seen = func(m string) { seen = append(seen, m) } })
	ctx := context.Background()
	s.Handle(ctx, discover(mac(1)))
	s.Handle(ctx, discover(mac(2), dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))))
	s.Handle(ctx, discover(mac(3), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))))
	if diff := cmp.Diff([]string{mac(2).String(), mac(3).String()}, seen); diff != "" {
		t.Errorf("Seen (-want +got):\n%s", diff)
	}
}

// TestTwoServersNeverAckOneAddressTwice: two servers (replicas) on one
// network share the lease store but not their memory. The second, not
// knowing the first's lease, offers the same address to another client;
// its REQUEST is NAKed (the claim is the first's), the second learns the
// lease, and the client gets another address on its next try.
func TestTwoServersNeverAckOneAddressTwice(t *testing.T) {
	st := newFakeLeases()
	a, _ := newTestServer(t, st, nil)
	b, _ := newTestServer(t, st, func(c *Config) { c.ServerIP = net.IPv4(10, 0, 0, 2) })
	ackA := exchange(t, a, mac(1))
	ctx := context.Background()
	offer := b.Handle(ctx, discover(mac(2)))
	if offer == nil || !offer.YourIPAddr.Equal(ackA.YourIPAddr) {
		t.Fatalf("b's offer = %v, want the address a leased (%v): b does not know of it yet", offer, ackA.YourIPAddr)
	}
	got := b.Handle(ctx, request(mac(2), offer.YourIPAddr, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier()))))
	if got == nil || got.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("b's answer to a REQUEST of a's address = %v, want NAK", got)
	}
	ackB := exchange(t, b, mac(2))
	if ackB.YourIPAddr.Equal(ackA.YourIPAddr) {
		t.Fatalf("both servers acked %v", ackA.YourIPAddr)
	}
	if l := st.leases[mac(1).String()]; l.IP != ackA.YourIPAddr.String() {
		t.Errorf("a's lease after b's attempt: %+v", l)
	}
	// The spread start: with Spread, a pool's first offer is not its
	// first address.
	c, _ := newTestServer(t, newFakeLeases(), func(c *Config) { c.Spread = 2 })
	if o := c.Handle(ctx, discover(mac(3))); o == nil || !o.YourIPAddr.Equal(net.IPv4(10, 0, 0, 102)) {
		t.Errorf("offer with Spread 2 = %v, want 10.0.0.102", o)
	}
}

// TestLeaseReuse: a client asking again within a quarter of the lease
// time gets its stored lease, with the time it has left, and nothing is
// written; later, with another host name, after a failed write or with
// reuse off, a new lease is written before the ACK.
func TestLeaseReuse(t *testing.T) {
	store := newFakeLeases()
	s, clk := newTestServer(t, store, nil)
	first := exchange(t, s, mac(1))
	written := store.txns
	stored := store.leases[mac(1).String()]

	clk.t = clk.t.Add(10 * time.Minute)
	again := exchange(t, s, mac(1))
	if !again.YourIPAddr.Equal(first.YourIPAddr) || store.txns != written {
		t.Errorf("asked again after 10 min: %v with %d writes, want %v and none", again.YourIPAddr, store.txns-written, first.YourIPAddr)
	}
	if got, want := again.IPAddressLeaseTime(0), 50*time.Minute; got != want {
		t.Errorf("reused lease's time = %v, want the %v it has left", got, want)
	}
	if got := store.leases[mac(1).String()]; !got.Expires.Equal(stored.Expires) {
		t.Errorf("stored lease changed: %v, was %v", got.Expires, stored.Expires)
	}

	clk.t = clk.t.Add(6 * time.Minute) // 16 min old: past a quarter hour
	late := exchange(t, s, mac(1))
	if store.txns != written+1 || late.IPAddressLeaseTime(0) != time.Hour || !store.leases[mac(1).String()].Expires.Equal(clk.t.Add(time.Hour)) {
		t.Errorf("asked again at 16 min: %d writes, lease time %v, stored expiry %v; want a new hour written", store.txns-written, late.IPAddressLeaseTime(0), store.leases[mac(1).String()].Expires)
	}

	// Another host name is a change to store.
	offer := s.Handle(t.Context(), discover(mac(1)))
	ack := s.Handle(t.Context(), request(mac(1), offer.YourIPAddr, dhcpv4.WithOption(dhcpv4.OptHostName("web-1"))))
	if ack == nil || store.txns != written+2 || store.leases[mac(1).String()].Hostname != "web-1" {
		t.Errorf("new host name: %v with %d writes, stored %+v", ack, store.txns-written, store.leases[mac(1).String()])
	}

	// A write that failed leaves nothing to reuse: the next ACK writes.
	store.fail = errors.New("disk on fire")
	offer = s.Handle(t.Context(), discover(mac(2)))
	if got := s.Handle(t.Context(), request(mac(2), offer.YourIPAddr)); got != nil {
		t.Fatalf("REQUEST with a failing store: %v", got.MessageType())
	}
	store.fail = nil
	before := store.txns
	exchange(t, s, mac(2))
	if _, ok := store.leases[mac(2).String()]; !ok || store.txns != before+1 {
		t.Errorf("after a failed write the ACK was given without a lease stored (%d writes)", store.txns-before)
	}

	// Reuse off: every ACK writes.
	off := newFakeLeases()
	s2, _ := newTestServer(t, off, func(c *Config) { c.LeaseReuse = -1 })
	exchange(t, s2, mac(3))
	exchange(t, s2, mac(3))
	if off.txns != 2 {
		t.Errorf("reuse off: %d writes for two ACKs, want 2", off.txns)
	}
}
