package guestagent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/loomfabric/loom/agent/channel"
)

// TestQueueFacade: the role's HTTP view of its queues becomes queue calls
// on the channel, and the host's answers become HTTP answers.
func TestQueueFacade(t *testing.T) {
	var calls []channel.QueueCall
	host := &channel.Host{Services: map[string]channel.Handler{"queue": func(_ context.Context, s net.Conn) {
		defer s.Close()
		var c channel.QueueCall
		if channel.ReadFrame(s, &c) != nil {
			return
		}
		calls = append(calls, c)
		ans := channel.QueueAnswer{Code: 200}
		switch {
		case c.Op == "put":
			ans.ID = "m1"
		case c.Op == "peek" && c.Max > 32:
			ans = channel.QueueAnswer{Code: 400, Error: "max: want 1 to 32"}
		case c.Op == "peek":
			ans.Length, ans.Messages = 7, []channel.QueueMessage{{ID: "m1", Body: []byte("one"), Deliveries: 1}, {ID: "m2", Body: []byte("two")}}
		case c.Op == "get" && c.Queue == "empty":
		case c.Op == "get":
			ans.Message = &channel.QueueMessage{ID: "m1", Body: []byte("entry"), Deliveries: 2, Receipt: "r2"}
		case c.Receipt != "r2":
			ans = channel.QueueAnswer{Code: 409, Error: "stale receipt"}
		}
		_ = channel.WriteFrame(s, ans)
	}}}
	hostEnd, guestEnd := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = host.Serve(ctx, hostEnd) }()
	g, err := channel.Dial(guestEnd, channel.Hello{Version: channel.Version, Side: "guest"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	a := &guestAgent{log: slog.New(slog.DiscardHandler), ch: g}

	for _, tc := range []struct {
		method, target, body string
		code                 int
		want                 string // body, or a header: value
	}{
		{"POST", "/queues/entries", "entry", 201, `{"id":"m1"}`},
		{"GET", "/queues/entries?visibility=10s", "", 200, "entry"},
		{"GET", "/queues/empty", "", 204, ""},
		{"DELETE", "/queues/entries/m1?receipt=r1", "", 409, "stale receipt"},
		{"DELETE", "/queues/entries/m1?receipt=r2", "", 204, ""},
		{"GET", "/queues/book?peek=2", "", 200, `{"length":7,"messages":[{"id":"m1","body":"b25l",`},
		{"GET", "/queues/book?peek=99", "", 400, "max: want 1 to 32"},
		{"GET", "/queues/book?peek=x", "", 400, `peek "x": want a number`},
		{"PUT", "/queues/entries", "", 405, "want POST"},
		{"DELETE", "/queues/entries", "", 405, "want POST"},
		{"POST", "/queues/entries", strings.Repeat("x", maxQueueBody+1), 413, "larger than"},
	} {
		rec := httptest.NewRecorder()
		a.serveQueues(rec, httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body)))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.target, rec.Code, body, tc.code, tc.want)
		}
		if tc.code == 200 && !strings.Contains(tc.target, "peek") && (rec.Header().Get("Loom-Receipt") != "r2" || rec.Header().Get("Loom-Message-Id") != "m1" || rec.Header().Get("Loom-Deliveries") != "2") {
			t.Errorf("GET: headers %v", rec.Header())
		}
	}
	if len(calls) != 7 || calls[1].Visibility != "10s" || calls[0].Queue != "entries" || string(calls[0].Body) != "entry" || calls[4].ID != "m1" || calls[5].Max != 2 || calls[5].Queue != "book" {
		t.Errorf("calls %+v", calls)
	}

	// No channel: 502 with the reason.
	a.ch = nil
	rec := httptest.NewRecorder()
	a.serveQueues(rec, httptest.NewRequest("GET", "/queues/entries", nil))
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "no channel") {
		t.Errorf("without a channel: %d %q", rec.Code, rec.Body.String())
	}
}
