package lab

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// SendRouterAdverts multicasts an IPv6 router advertisement (no prefix,
// router lifetime 0: "there is no IPv6 router here") on the bridge every
// two seconds until stop is called. Without one, iPXE waits ~13 s for IPv6
// autoconfiguration before it fetches its boot script.
func (n *Net) SendRouterAdverts(ctx context.Context) (stop func(), err error) {
	conn, err := n.listenICMPv6()
	if err != nil {
		return nil, err
	}
	ifi, err := n.ifaceInNS()
	if err != nil {
		conn.Close()
		return nil, err
	}
	pc := conn.IPv6PacketConn()
	pc.SetMulticastHopLimit(255)
	pc.SetHopLimit(255)
	pc.SetMulticastInterface(ifi)
	ra := []byte{
		0, 0, // cur hop limit, flags (M=0, O=0)
		0, 0, // router lifetime 0
		0, 0, 0, 0, // reachable time
		0, 0, 0, 0, // retrans timer
	}
	msg := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: ra}}
	b, err := msg.Marshal(nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	dst := &net.IPAddr{IP: net.ParseIP("ff02::1")}
	cm := &ipv6.ControlMessage{IfIndex: ifi.Index, HopLimit: 255}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			pc.WriteTo(b, cm, dst)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

// inNS runs fn on a thread switched into the namespace.
func (n *Net) inNS(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromName(n.NS)
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", n.NS, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}

func (n *Net) listenICMPv6() (*icmp.PacketConn, error) {
	var c *icmp.PacketConn
	err := n.inNS(func() error {
		var err error
		c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("router adverts: %w", err)
	}
	return c, nil
}

func (n *Net) ifaceInNS() (*net.Interface, error) {
	var ifi *net.Interface
	err := n.inNS(func() error {
		var err error
		ifi, err = net.InterfaceByName(n.Bridge)
		return err
	})
	return ifi, err
}
