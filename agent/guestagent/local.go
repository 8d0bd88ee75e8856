package guestagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/loomfabric/loom/agent/channel"
)

var errNoChannel = errors.New("no channel to the host right now")

// open opens a stream to a host service on the current channel.
func (a *guestAgent) open(service string) (net.Conn, error) {
	a.mu.Lock()
	g := a.ch
	a.mu.Unlock()
	if g == nil {
		return nil, errNoChannel
	}
	return g.Open(service)
}

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
		a.mu.Lock()
		name := a.instance
		a.mu.Unlock()
		fmt.Fprintln(w, name)
	})
	mux.HandleFunc("/queues/", a.serveQueues)
	// A role reaches the host's services (the queue and blob services of
	// later issues) through here: CONNECT-style, the answer is 200 and then
	// the raw stream, or 403 with the host's refusal.
	mux.HandleFunc("/connect/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		st, err := a.open(strings.TrimPrefix(r.URL.Path, "/connect/"))
		if errors.Is(err, errNoChannel) {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
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

// serveQueues is the role's view of its service's queues, carried to the
// host over the channel ("queue" stream, one per request):
//
//	POST   /queues/Q                  body = the message (≤ 64 KiB) → 201 {"id": ID}
//	GET    /queues/Q[?visibility=30s] → 200 body = the message, headers
//	                                    Loom-Message-Id, Loom-Receipt,
//	                                    Loom-Deliveries; 204 when none is visible
//	DELETE /queues/Q/ID?receipt=R     → 204
//	GET    /queues/Q?peek=N           → 200 {"length": L, "messages": [{"id", "body"
//	                                    (base64), "enqueued", "deliveries"}]}: up to N
//	                                    (1–32) visible messages from the front, left
//	                                    where they are, and the queue's length
//
// Errors keep the host's code (400, 403, 404, 409 stale receipt, 429 queue
// full, 502) with the reason as text.
func (a *guestAgent) serveQueues(w http.ResponseWriter, r *http.Request) {
	queue, id, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/queues/"), "/")
	var call channel.QueueCall
	switch {
	case r.Method == http.MethodPost && id == "":
		body, err := io.ReadAll(io.LimitReader(r.Body, maxQueueBody+1))
		if err != nil {
			http.Error(w, "reading the message: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(body) > maxQueueBody {
			http.Error(w, fmt.Sprintf("message larger than %d bytes", maxQueueBody), http.StatusRequestEntityTooLarge)
			return
		}
		call = channel.QueueCall{Op: "put", Queue: queue, Body: body}
	case r.Method == http.MethodGet && id == "" && r.URL.Query().Has("peek"):
		n, err := strconv.Atoi(r.URL.Query().Get("peek"))
		if err != nil {
			http.Error(w, fmt.Sprintf("peek %q: want a number of messages", r.URL.Query().Get("peek")), http.StatusBadRequest)
			return
		}
		call = channel.QueueCall{Op: "peek", Queue: queue, Max: n}
	case r.Method == http.MethodGet && id == "":
		call = channel.QueueCall{Op: "get", Queue: queue, Visibility: r.URL.Query().Get("visibility")}
	case r.Method == http.MethodDelete && id != "":
		call = channel.QueueCall{Op: "delete", Queue: queue, ID: id, Receipt: r.URL.Query().Get("receipt")}
	default:
		http.Error(w, "want POST /queues/Q, GET /queues/Q or DELETE /queues/Q/ID?receipt=R", http.StatusMethodNotAllowed)
		return
	}
	ans, err := a.queueCall(call)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if ans.Code != http.StatusOK {
		if ans.Code < 400 || ans.Code > 599 {
			ans.Code = http.StatusBadGateway
		}
		http.Error(w, ans.Error, ans.Code)
		return
	}
	switch call.Op {
	case "put":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"id": ans.ID}) // the role may have hung up
	case "get":
		m := ans.Message
		if m == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Loom-Message-Id", m.ID)
		w.Header().Set("Loom-Receipt", m.Receipt)
		w.Header().Set("Loom-Deliveries", strconv.Itoa(m.Deliveries))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(m.Body) // the role may have hung up
	case "peek":
		type peeked struct {
			ID         string    `json:"id"`
			Body       []byte    `json:"body"`
			Enqueued   time.Time `json:"enqueued"`
			Deliveries int       `json:"deliveries"`
		}
		out := struct {
			Length   int      `json:"length"`
			Messages []peeked `json:"messages"`
		}{Length: ans.Length, Messages: []peeked{}}
		for _, m := range ans.Messages {
			out.Messages = append(out.Messages, peeked{m.ID, m.Body, m.Enqueued, m.Deliveries})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out) // the role may have hung up
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// maxQueueBody is the fabric's bound on a message (api.MaxQueueMessage).
const maxQueueBody = 64 << 10

// queueCall makes one call on a new "queue" stream.
func (a *guestAgent) queueCall(call channel.QueueCall) (channel.QueueAnswer, error) {
	st, err := a.open("queue")
	if err != nil {
		return channel.QueueAnswer{}, fmt.Errorf("queue: %w", err)
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(30 * time.Second))
	if err := channel.WriteFrame(st, call); err != nil {
		return channel.QueueAnswer{}, fmt.Errorf("queue: %w", err)
	}
	var ans channel.QueueAnswer
	if err := channel.ReadFrame(st, &ans); err != nil {
		return channel.QueueAnswer{}, fmt.Errorf("queue: no answer from the host: %w", err)
	}
	return ans, nil
}
