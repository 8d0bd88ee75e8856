package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// replica is a fake loomd answering GET /v1/nodes with code (200: an
// empty list), counting its calls; leader, if set, is named in
// api.LeaderHeader.
func replica(t *testing.T, code *atomic.Int32, leader *string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if leader != nil && *leader != "" {
			w.Header().Set(api.LeaderHeader, *leader)
		}
		w.Header().Set("Content-Type", "application/json")
		c := int(code.Load())
		w.WriteHeader(c)
		if c == 200 {
			_, _ = w.Write([]byte("[]"))
			return
		}
		_, _ = w.Write([]byte(`{"error":"not now"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func deadURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	_ = l.Close() // nothing listens there now: connections are refused
	return u
}

// TestFailover: a call moves past a replica that refuses connections or
// answers 503, sticks to the one that answered, follows the leader the
// answers name, and gives up after Failover; other errors are not
// retried.
func TestFailover(t *testing.T) {
	ctx := context.Background()
	var ok, busy, bad atomic.Int32
	ok.Store(200)
	busy.Store(503)
	bad.Store(400)
	a, aCalls := replica(t, &ok, nil)
	dead := deadURL(t)

	c := &Client{BaseURL: dead + "," + a.URL}
	if _, err := c.Nodes(ctx); err != nil {
		t.Fatalf("with the first replica down: %v", err)
	}
	if c.URL() != a.URL {
		t.Errorf("URL after the failover = %s, want %s", c.URL(), a.URL)
	}
	if _, err := c.Nodes(ctx); err != nil || aCalls.Load() != 2 {
		t.Errorf("second call: %v, %d calls on the live replica, want it asked first", err, aCalls.Load())
	}

	// A single replica refusing connections is not retried (loomd down:
	// say so at once).
	one := &Client{BaseURL: dead}
	start := time.Now()
	if _, err := one.Nodes(ctx); err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("a lone dead replica: %v after %v, want an error at once", err, time.Since(start))
	}

	// 503 is retried, here or on the next, until Failover.
	b, bCalls := replica(t, &busy, nil)
	c = &Client{BaseURL: b.URL, Failover: 300 * time.Millisecond}
	start = time.Now()
	_, err := c.Nodes(ctx)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 503 || bCalls.Load() < 2 || time.Since(start) < 300*time.Millisecond {
		t.Errorf("always 503: %v after %v and %d calls, want 503 after retries for 300ms", err, time.Since(start), bCalls.Load())
	}
	go func() { time.Sleep(200 * time.Millisecond); busy.Store(200) }()
	c.Failover = 5 * time.Second
	if _, err := c.Nodes(ctx); err != nil {
		t.Errorf("503 then 200: %v", err)
	}

	// A 400 is the answer: no retry.
	d, dCalls := replica(t, &bad, nil)
	c = &Client{BaseURL: d.URL + "," + a.URL}
	if _, err := c.Nodes(ctx); err == nil || !strings.Contains(err.Error(), "400") || dCalls.Load() != 1 {
		t.Errorf("a 400: %v after %d calls, want it returned at once", err, dCalls.Load())
	}

	// The answer names the leader: the next call goes there.
	var leader string
	f, _ := replica(t, &ok, &leader)
	l, lCalls := replica(t, &ok, nil)
	leader = l.URL
	c = &Client{BaseURL: f.URL + "," + l.URL}
	if _, err := c.Nodes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Nodes(ctx); err != nil || lCalls.Load() != 1 {
		t.Errorf("after an answer naming the leader: %v, %d calls on it, want the next call there", err, lCalls.Load())
	}

	// An answer that breaks off (the replica died sending it) is tried on
	// the next replica; with one replica it is the error.
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		_, _ = w.Write([]byte("[")) // 99 bytes short
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(cut.Close)
	before := aCalls.Load()
	c = &Client{BaseURL: cut.URL + "," + a.URL}
	if _, err := c.Nodes(ctx); err != nil || aCalls.Load() != before+1 {
		t.Errorf("an answer cut short, then a live replica: %v, %d calls on the live one, want it answered there", err, aCalls.Load()-before)
	}
	if _, err := (&Client{BaseURL: cut.URL}).Nodes(ctx); err == nil || !strings.Contains(err.Error(), "reading answer") {
		t.Errorf("an answer cut short on the only replica: %v, want the read error", err)
	}
}
