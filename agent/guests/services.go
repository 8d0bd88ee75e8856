package guests

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/vmm"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// serveChannel runs the host end of the guest's channel while its QEMU
// lives, connecting again whenever a session ends (a guest reboot or a
// guest agent restart starts a new one).
func (g *guest) serveChannel(ctx context.Context, v *vmm.VM) {
	for ctx.Err() == nil && v.Alive() {
		conn, err := v.Channel()
		if err == nil {
			err = g.ch.Serve(ctx, conn)
			_ = conn.Close() // the session is over either way
			if err != nil {
				g.s.log.Debug("channel session ended", "vm", g.id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// control serves the guest's control stream: what the guest agent reports
// (its interfaces, its role's health, log lines) and, the other way, the
// host's "shutdown".
func (g *guest) control(_ context.Context, s net.Conn) {
	defer s.Close()
	g.mu.Lock()
	g.ctrl = s
	g.mu.Unlock()
	for {
		var m channel.Message
		if err := channel.ReadFrame(s, &m); err != nil {
			return
		}
		// The guest is not trusted: bound what it can make the host report.
		if len(m.Interfaces) > 64 {
			m.Interfaces = m.Interfaces[:64]
		}
		for i, n := range m.Interfaces {
			if len(n) > 32 {
				m.Interfaces[i] = n[:32]
			}
		}
		if len(m.Line) > 512 {
			m.Line = m.Line[:512]
		}
		switch m.Type {
		case "interfaces":
			g.mu.Lock()
			g.interfaces = m.Interfaces
			g.mu.Unlock()
			g.s.cfg.OnChange()
		case "health":
			switch m.State {
			case "ready":
				g.set(api.VMStateRunning, "")
			default:
				g.set(api.VMStateStarting, "role "+m.State+": "+m.Line)
			}
		case "log":
			g.s.log.Info("guest", "vm", g.id, "line", m.Line)
		}
	}
}

// serveGoal tells the guest agent its instance, role package and settings.
func (g *guest) serveGoal(_ context.Context, s net.Conn) {
	defer s.Close()
	g.mu.Lock()
	goal := g.goal
	g.mu.Unlock()
	if goal == nil {
		return
	}
	gg := channel.GuestGoal{Instance: g.id, Package: goal.Package, Digest: goal.PackageDigest, Settings: goal.Settings}
	if h := goal.Health; h != nil {
		gg.Health = &channel.HealthProbe{Path: h.Path, Interval: time.Duration(h.Interval).String(), Timeout: time.Duration(h.Timeout).String(), Failures: h.Failures}
	}
	if err := channel.WriteFrame(s, gg); err != nil {
		g.s.log.Debug("goal not sent to the guest", "vm", g.id, "err", err)
	}
}

// serveQueue carries the guest's queue calls to the fabric, which scopes
// them to the guest's service: one answer per call, until the guest
// closes the stream.
func (g *guest) serveQueue(ctx context.Context, s net.Conn) {
	defer s.Close()
	for {
		var call api.QueueRequest
		if err := channel.ReadFrame(s, &call); err != nil {
			if !errors.Is(err, io.EOF) {
				// Bad JSON or a frame too big: say so, then hang up.
				_ = channel.WriteFrame(s, channel.QueueAnswer{Code: http.StatusBadRequest, Error: err.Error()}) // it may be gone already
			}
			return
		}
		ans := channel.QueueAnswer{Code: http.StatusOK}
		if g.s.cfg.Queue == nil {
			ans = channel.QueueAnswer{Code: http.StatusForbidden, Error: "this host offers no queues"}
		} else if rep, err := g.s.cfg.Queue(ctx, g.id, call); err != nil {
			ans.Code, ans.Error = http.StatusBadGateway, err.Error()
			var se *client.StatusError
			if errors.As(err, &se) {
				ans.Code, ans.Error = se.Code, se.Message
			}
		} else {
			ans.ID, ans.Length = rep.ID, rep.Length
			if m := rep.Message; m != nil {
				ans.Message = &channel.QueueMessage{ID: m.ID, Body: m.Body, Enqueued: m.Enqueued, Deliveries: m.Deliveries, Receipt: m.Receipt}
			}
			for _, m := range rep.Messages {
				ans.Messages = append(ans.Messages, channel.QueueMessage{ID: m.ID, Body: m.Body, Enqueued: m.Enqueued, Deliveries: m.Deliveries})
			}
		}
		if err := channel.WriteFrame(s, ans); err != nil {
			return
		}
	}
}

// servePackage streams the (checked) role package to the guest agent.
func (g *guest) servePackage(_ context.Context, s net.Conn) {
	defer s.Close()
	g.mu.Lock()
	pkg, goal := g.pkg, g.goal
	g.mu.Unlock()
	if pkg == "" || goal == nil {
		return
	}
	f, err := os.Open(pkg)
	if err != nil {
		g.s.log.Warn("role package unreadable", "vm", g.id, "err", err)
		return
	}
	defer func() { _ = f.Close() }() // read only
	fi, err := f.Stat()
	if err != nil {
		g.s.log.Warn("role package unreadable", "vm", g.id, "err", err)
		return
	}
	if err := channel.WriteFrame(s, channel.PackageHeader{Size: fi.Size(), Digest: goal.PackageDigest}); err != nil {
		g.s.log.Debug("package not sent to the guest", "vm", g.id, "err", err)
		return
	}
	if _, err := io.Copy(s, f); err != nil {
		// The guest checks size and digest; it asks again.
		g.s.log.Debug("package transfer to the guest cut short", "vm", g.id, "err", err)
	}
}
