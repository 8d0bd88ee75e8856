package lab

import (
	"context"
	"fmt"
	"log"
	"net"
	"runtime"
	"time"

	"github.com/vishvananda/netns"

	"github.com/loomfabric/loom/agent/channel"
)

// Forward carries TCP connections accepted on listen (in this process's
// network namespace: the host's) to target inside the namespace ns, until
// ctx ends: how a browser on the host reaches loomd's dashboard in the
// lab. The bytes pass through untouched (TLS stays end to end).
func Forward(ctx context.Context, listen, ns, target string) error {
	if _, err := netns.GetFromName(ns); err != nil {
		return fmt.Errorf("forward: namespace %s: %w", ns, err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("forward: %w", err)
		}
		go func() {
			defer c.Close()
			up, err := DialIn(ns, target)
			if err != nil {
				log.Printf("forward: %s → %s in %s: %v", c.RemoteAddr(), target, ns, err)
				return
			}
			defer up.Close()
			channel.Pipe(c, up)
		}()
	}
}

// DialIn opens a TCP connection to target from inside namespace ns.
func DialIn(ns, target string) (net.Conn, error) {
	var c net.Conn
	var dialErr error
	if err := InNS(ns, func() { c, dialErr = net.DialTimeout("tcp", target, 5*time.Second) }); err != nil {
		if c != nil {
			c.Close()
		}
		return nil, err
	}
	return c, dialErr
}

// InNS runs fn on a thread moved into namespace ns, which then moves
// back: the sockets fn makes belong to ns.
func InNS(ns string, fn func()) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer func() { _ = orig.Close() }()
	h, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer func() { _ = h.Close() }()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	fn()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked, so it ends with this goroutine rather
		// than run other goroutines in the wrong namespace.
		return fmt.Errorf("returning to the host's namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return nil
}
