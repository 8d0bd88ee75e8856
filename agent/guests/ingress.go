package guests

import (
	"fmt"
	"net"
	"strconv"

	"github.com/loomfabric/loom/agent/channel"
)

// listenIngress opens (or reopens, on the same port as before a host
// agent restart) the host port that carries TCP connections to the role.
func (g *guest) listenIngress() error {
	g.mu.Lock()
	open, port := g.ingress != nil, g.saved.IngressPort
	g.mu.Unlock()
	if open {
		return nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(g.s.cfg.IngressIP, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("ingress for %s: %w", g.id, err)
	}
	g.mu.Lock()
	g.ingress = ln
	g.mu.Unlock()
	if got := ln.Addr().(*net.TCPAddr).Port; got != port {
		g.persist(func(st *persisted) { st.IngressPort = got })
	}
	go g.serveIngress(ln)
	return nil
}

// serveIngress carries each connection to the host port into the guest
// over an "ingress" stream on its channel.
func (g *guest) serveIngress(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			st, err := g.ch.Open("ingress")
			if err != nil {
				g.s.log.Warn("ingress: no way into the guest", "vm", g.id, "err", err)
				return
			}
			defer st.Close()
			channel.Pipe(c, st)
		}()
	}
}
