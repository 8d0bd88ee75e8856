package guestagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/loomfabric/loom/agent/channel"
)

// ingress carries one host connection to the role's port.
func (a *guestAgent) ingress(_ context.Context, s net.Conn) {
	defer s.Close()
	a.mu.Lock()
	spec := a.spec
	a.mu.Unlock()
	if spec == nil || spec.Port == 0 {
		return
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", spec.Port))
	if err != nil {
		a.log.Warn("ingress: role not listening", "port", spec.Port, "err", err)
		return
	}
	defer c.Close()
	channel.Pipe(c, s)
}

// serveLocal is the role's local endpoint: GET /settings (JSON), /health.
func (a *guestAgent) serveLocal() {
	// Plain patterns: u-root builds the agent with the Go 1.21 mux rules
	// (no methods or wildcards in patterns).
	mux := http.NewServeMux()
	mux.HandleFunc("/settings", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		var settings map[string]string
		if a.goal != nil {
			settings = a.goal.Settings
		}
		a.mu.Unlock()
		if settings == nil {
			settings = map[string]string{}
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(settings); err != nil {
			a.log.Debug("local endpoint: settings not sent", "err", err)
		}
	})
	mux.HandleFunc("/instance", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, a.instance)
	})
	// A role reaches the host's services (the queue and blob services of
	// later issues) through here: CONNECT-style, the answer is 200 and then
	// the raw stream, or 403 with the host's refusal.
	mux.HandleFunc("/connect/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		a.mu.Lock()
		g := a.ch
		a.mu.Unlock()
		if g == nil {
			http.Error(w, "no channel to the host right now", http.StatusServiceUnavailable)
			return
		}
		st, err := g.Open(strings.TrimPrefix(r.URL.Path, "/connect/"))
		if errors.Is(err, channel.ErrRefused) {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer st.Close()
		rc := http.NewResponseController(w)
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return
		}
		conn, buf, err := rc.Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		// What the role sent after its request may sit in buf already.
		channel.Pipe(bufferedConn{conn, buf}, st)
	})
	for {
		err := http.ListenAndServe(LocalEndpoint, mux)
		a.log.Warn("local endpoint", "err", err)
		time.Sleep(time.Second)
	}
}

// bufferedConn reads through the reader a hijacked HTTP connection left
// (which may hold bytes read ahead) and writes to the connection.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
