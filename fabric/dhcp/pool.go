package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// ErrExhausted means the pool has no address left to offer.
var ErrExhausted = errors.New("address pool exhausted")

type binding struct {
	mac      string
	ip       uint32
	expires  time.Time
	hostname string
	relay    *api.LeaseRelay
	// stored is the expiry the store is known to hold for this binding
	// (zero: not known to be stored).
	stored time.Time
}

type hold struct {
	mac   string
	until time.Time
}

// poolSpec describes one subnet's pool.
type poolSpec struct {
	name         string
	subnet, mask uint32
	start, end   net.IP
	exclude      uint32 // the server's or router's own address (0: none)
	router       net.IP
	dns          []net.IP
	netmask      net.IPMask
	leaseTime    time.Duration
	offerHold    time.Duration
	declineHold  time.Duration
}

// pool is the allocation state of one subnet. Every method takes the lock;
// none does I/O.
type pool struct {
	mu            sync.Mutex
	start, end    uint32
	subnet, mask  uint32
	server        uint32 // never handed out
	router        net.IP
	dns           []net.IP
	netmask       net.IPMask
	leaseTime     time.Duration
	offerHold     time.Duration
	declineHold   time.Duration
	reservedByMAC map[string]uint32
	reservedByIP  map[uint32]string
	leases        map[string]*binding // by MAC, expired ones included
	owner         map[uint32]string   // IP → MAC of its lease
	offers        map[uint32]hold     // IP → offered to
	offerOf       map[string]uint32   // MAC → IP offered
	declined      map[uint32]time.Time
	cursor        uint32
}

func ip4(ip net.IP) uint32 {
	v4 := ip.To4()
	if v4 == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v4)
}

func ipOf(v uint32) net.IP {
	b := make(net.IP, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

func newPool(sp poolSpec) (*pool, error) {
	if sp.start.To4() == nil || sp.end.To4() == nil {
		return nil, fmt.Errorf("dhcp: pool %v-%v of subnet %s: both ends must be IPv4 addresses", sp.start, sp.end, sp.name)
	}
	p := &pool{
		start: ip4(sp.start), end: ip4(sp.end), subnet: sp.subnet & sp.mask, mask: sp.mask, server: sp.exclude,
		router: sp.router, dns: sp.dns, netmask: sp.netmask,
		leaseTime: sp.leaseTime, offerHold: sp.offerHold, declineHold: sp.declineHold,
		reservedByMAC: map[string]uint32{}, reservedByIP: map[uint32]string{},
		leases: map[string]*binding{}, owner: map[uint32]string{},
		offers: map[uint32]hold{}, offerOf: map[string]uint32{}, declined: map[uint32]time.Time{},
	}
	p.cursor = p.start
	if p.start > p.end {
		return nil, fmt.Errorf("dhcp: pool start %v is after its end %v", sp.start, sp.end)
	}
	if !p.inSubnet(p.start) || !p.inSubnet(p.end) {
		return nil, fmt.Errorf("dhcp: pool %v-%v is not inside the subnet %s", sp.start, sp.end, p.prefix())
	}
	if r := ip4(sp.router); sp.router != nil && !p.inSubnet(r) {
		return nil, fmt.Errorf("dhcp: router %v is not in the subnet %s", sp.router, p.prefix())
	}
	return p, nil
}

// prefix is the subnet in CIDR notation.
func (p *pool) prefix() string { return fmt.Sprintf("%v/%d", ipOf(p.subnet), maskBits(p.mask)) }

// reserve pins v to mac.
func (p *pool) reserve(mac string, v uint32) error {
	if v == 0 || !p.inSubnet(v) || v == p.server {
		return errors.New("address is not a usable address of the subnet")
	}
	if other, dup := p.reservedByIP[v]; dup {
		return fmt.Errorf("address is reserved for both %s and %s", other, mac)
	}
	p.reservedByMAC[mac] = v
	p.reservedByIP[v] = mac
	return nil
}

func maskBits(m uint32) int {
	n := 0
	for ; m != 0; m <<= 1 {
		n++
	}
	return n
}

func (p *pool) inSubnet(v uint32) bool {
	host := v &^ p.mask
	return v&p.mask == p.subnet && host != 0 && host != ^p.mask
}

func (p *pool) inPool(v uint32) bool { return v >= p.start && v <= p.end }

// load adds a stored lease at start-up.
func (p *pool) load(l api.Lease) error {
	hw, err := net.ParseMAC(l.MAC)
	if err != nil {
		return err
	}
	v := ip4(net.ParseIP(l.IP))
	if v == 0 || !p.inSubnet(v) {
		return fmt.Errorf("address %q is not in the subnet", l.IP)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bind(&binding{mac: hw.String(), ip: v, expires: l.Expires, hostname: l.Hostname, relay: l.Relay, stored: l.Expires})
	return nil
}

// bind records b, dropping whatever either of its MAC or IP had before.
func (p *pool) bind(b *binding) {
	if old, ok := p.leases[b.mac]; ok {
		delete(p.owner, old.ip)
	}
	if prev, ok := p.owner[b.ip]; ok && prev != b.mac {
		delete(p.leases, prev)
	}
	p.leases[b.mac] = b
	p.owner[b.ip] = b.mac
}

// usableFor says whether ip may go to mac now.
func (p *pool) usableFor(v uint32, mac string, now time.Time) error {
	if !p.inSubnet(v) || v == p.server {
		return fmt.Errorf("%v is not a usable address here", ipOf(v))
	}
	if r, ok := p.reservedByIP[v]; ok {
		if r != mac {
			return fmt.Errorf("%v is reserved for %s", ipOf(v), r)
		}
		return nil
	}
	if !p.inPool(v) {
		return fmt.Errorf("%v is outside the pool", ipOf(v))
	}
	if until, ok := p.declined[v]; ok && now.Before(until) {
		return fmt.Errorf("%v was declined", ipOf(v))
	}
	if o, ok := p.offers[v]; ok && o.mac != mac && now.Before(o.until) {
		return fmt.Errorf("%v is offered to %s", ipOf(v), o.mac)
	}
	if m, ok := p.owner[v]; ok && m != mac && now.Before(p.leases[m].expires) {
		return fmt.Errorf("%v is leased to %s", ipOf(v), m)
	}
	return nil
}

// free says whether ip is free for anyone: no lease at all, even expired.
func (p *pool) free(v uint32, now time.Time) bool {
	if _, ok := p.owner[v]; ok {
		return false
	}
	if _, ok := p.reservedByIP[v]; ok || v == p.server {
		return false
	}
	if o, ok := p.offers[v]; ok && now.Before(o.until) {
		return false
	}
	if until, ok := p.declined[v]; ok && now.Before(until) {
		return false
	}
	return true
}

// offer chooses an address for mac and holds it.
func (p *pool) offer(mac string, requested net.IP, now time.Time) (net.IP, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, err := p.choose(mac, ip4(requested), now)
	if err != nil {
		return nil, err
	}
	p.unoffer(mac)
	p.offers[v] = hold{mac: mac, until: now.Add(p.offerHold)}
	p.offerOf[mac] = v
	return ipOf(v), nil
}

func (p *pool) choose(mac string, requested uint32, now time.Time) (uint32, error) {
	if v, ok := p.reservedByMAC[mac]; ok {
		return v, nil
	}
	if b, ok := p.leases[mac]; ok && p.usableFor(b.ip, mac, now) == nil {
		return b.ip, nil
	}
	if v, ok := p.offerOf[mac]; ok && p.usableFor(v, mac, now) == nil {
		return v, nil
	}
	if requested != 0 && p.inPool(requested) && p.free(requested, now) {
		return requested, nil
	}
	size := p.end - p.start + 1
	for i := uint32(0); i < size; i++ {
		v := p.cursor
		p.cursor++
		if p.cursor > p.end {
			p.cursor = p.start
		}
		if p.free(v, now) {
			return v, nil
		}
	}
	// No never-used address is left: reuse the lease that expired first.
	var oldest *binding
	for _, b := range p.leases {
		if now.Before(b.expires) || !p.inPool(b.ip) || p.usableFor(b.ip, mac, now) != nil {
			continue
		}
		if oldest == nil || b.expires.Before(oldest.expires) {
			oldest = b
		}
	}
	if oldest == nil {
		return 0, ErrExhausted
	}
	return oldest.ip, nil
}

// dropOffer forgets what was offered to mac (it chose another server).
func (p *pool) dropOffer(mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unoffer(mac)
}

func (p *pool) unoffer(mac string) {
	if v, ok := p.offerOf[mac]; ok {
		delete(p.offerOf, mac)
		if p.offers[v].mac == mac {
			delete(p.offers, v)
		}
	}
}

// ack binds ip to mac. It returns the new lease and the MAC that held the
// address before ("" if none; mac itself on a renewal; another MAC whose
// lease ran out and is displaced, its lease to be deleted from the store).
//
// With reuse > 0, a REQUEST for the address mac holds, whose lease is
// stored, unchanged (host name, relay) and younger than reuse of the lease
// time, gets that lease as it is: reused is true and nothing needs
// writing (the ACK gives the time it has left).
func (p *pool) ack(mac string, ip net.IP, hostname string, relay *api.LeaseRelay, now time.Time, reuse float64) (l api.Lease, prev string, reused bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := ip4(ip)
	if v == 0 {
		return api.Lease{}, "", false, fmt.Errorf("no usable requested address (%v)", ip)
	}
	if err := p.usableFor(v, mac, now); err != nil {
		return api.Lease{}, "", false, err
	}
	prev = p.owner[v]
	p.unoffer(mac)
	if b, ok := p.leases[mac]; ok && reuse > 0 && b.ip == v && b.stored.Equal(b.expires) && !b.stored.IsZero() &&
		b.hostname == hostname && relayEqual(b.relay, relay) &&
		b.expires.Sub(now) > p.leaseTime-time.Duration(reuse*float64(p.leaseTime)) {
		return api.Lease{MAC: mac, IP: ipOf(v).String(), Expires: b.expires, Hostname: hostname, Relay: b.relay}, prev, true, nil
	}
	b := &binding{mac: mac, ip: v, expires: now.Add(p.leaseTime), hostname: hostname, relay: relay}
	p.bind(b)
	return api.Lease{MAC: mac, IP: ipOf(v).String(), Expires: b.expires, Hostname: hostname, Relay: relay}, prev, false, nil
}

// stored notes that l (written by ack) is in the store, if mac's binding
// is still the one l describes.
func (p *pool) stored(l api.Lease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.leases[l.MAC]; ok && ipOf(b.ip).String() == l.IP && b.expires.Equal(l.Expires) {
		b.stored = l.Expires
	}
}

func relayEqual(a, b *api.LeaseRelay) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// forget drops whatever mac holds here (it took a lease in another subnet).
func (p *pool) forget(mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unoffer(mac)
	if b, ok := p.leases[mac]; ok {
		delete(p.leases, mac)
		if p.owner[b.ip] == mac {
			delete(p.owner, b.ip)
		}
	}
}

// release ends mac's lease now but keeps the binding, so the client gets
// the same address again if it is still free.
func (p *pool) release(mac string, ip net.IP, now time.Time) (api.Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.leases[mac]
	if !ok || b.ip != ip4(ip) {
		return api.Lease{}, false
	}
	b.expires = now
	return api.Lease{MAC: mac, IP: ipOf(b.ip).String(), Expires: now, Hostname: b.hostname, Relay: b.relay}, true
}

// decline quarantines ip (another host uses it) and drops mac's lease on it.
func (p *pool) decline(mac string, ip net.IP, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := ip4(ip)
	if v == 0 || !p.inPool(v) {
		return false
	}
	p.declined[v] = now.Add(p.declineHold)
	if o, ok := p.offers[v]; ok {
		p.unoffer(o.mac)
	}
	if b, ok := p.leases[mac]; ok && b.ip == v {
		delete(p.leases, mac)
		delete(p.owner, v)
		return true
	}
	return false
}

// expireHolds forgets offers and quarantines that ran out.
func (p *pool) expireHolds(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for v, o := range p.offers {
		if !now.Before(o.until) {
			p.unoffer(o.mac)
			delete(p.offers, v)
		}
	}
	for v, until := range p.declined {
		if !now.Before(until) {
			delete(p.declined, v)
		}
	}
}
