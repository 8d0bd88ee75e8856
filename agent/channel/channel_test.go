package channel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pair runs a host over one end of a pipe and dials the guest on the other.
func pair(t *testing.T, services map[string]Handler) (*Host, *Guest, chan Hello) {
	return pairWith(t, &Host{Instance: "web-0", Services: services}, nil)
}

func pairWith(t *testing.T, h *Host, guestServices map[string]Handler) (*Host, *Guest, chan Hello) {
	t.Helper()
	hc, gc := net.Pipe()
	hellos := make(chan Hello, 4)
	h.OnHello = func(g Hello) { hellos <- g }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, hc) }()
	t.Cleanup(func() { cancel(); <-done })
	g, err := Dial(gc, Hello{Agent: "test"}, guestServices, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return h, g, hellos
}

func TestHelloAndControl(t *testing.T) {
	got := make(chan Message, 4)
	_, g, hellos := pair(t, map[string]Handler{
		"control": func(_ context.Context, s net.Conn) {
			defer s.Close()
			for {
				var m Message
				if ReadFrame(s, &m) != nil {
					return
				}
				got <- m
			}
		},
	})
	if g.Host.Instance != "web-0" || g.Host.Side != "host" {
		t.Errorf("host hello = %+v", g.Host)
	}
	select {
	case h := <-hellos:
		if diff := cmp.Diff(Hello{Version: 1, Side: "guest", Agent: "test"}, h); diff != "" {
			t.Errorf("guest hello (-want +got):\n%s", diff)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("host never got the guest's hello")
	}
	s, err := g.Open("control")
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Type: "interfaces", Interfaces: []string{"lo"}}
	if err := WriteFrame(s, want); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if diff := cmp.Diff(want, m); diff != "" {
			t.Errorf("control message (-want +got):\n%s", diff)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("control message never arrived")
	}
}

func TestUnofferedServiceRefused(t *testing.T) {
	h, g, _ := pair(t, map[string]Handler{"control": func(context.Context, net.Conn) {}})
	_, err := g.Open("internet")
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `service "internet" not offered`) {
		t.Fatalf("Open(internet) = %v, want refused as not offered", err)
	}
	if h.Refused.Load() != 1 {
		t.Errorf("host counted %d refusals, want 1", h.Refused.Load())
	}
	// The session survives a refusal.
	if _, err := g.Open("control"); err != nil {
		t.Errorf("Open(control) after a refusal: %v", err)
	}
}

func TestFrameLimits(t *testing.T) {
	var buf bytes.Buffer
	buf.Write([]byte{0x7f, 0xff, 0xff, 0xff}) // 2 GiB declared
	var m Message
	if err := ReadFrame(&buf, &m); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("ReadFrame of a 2 GiB frame = %v, want a size error", err)
	}
	buf.Reset()
	buf.Write([]byte{0, 0, 0, 10, '{'})
	if err := ReadFrame(&buf, &m); err == nil {
		t.Errorf("ReadFrame of a short frame succeeded")
	}
}

// FuzzFrame: any bytes decode to a frame or an error, never a panic, and a
// decoded control message encodes again.
func FuzzFrame(f *testing.F) {
	var b bytes.Buffer
	WriteFrame(&b, Message{Type: "health", State: "ready"})
	f.Add(b.Bytes())
	b.Reset()
	WriteFrame(&b, Open{Service: "hello", Version: 1})
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []any{&Message{}, &Open{}, &Hello{}, &Answer{}} {
			if ReadFrame(bytes.NewReader(data), v) == nil {
				var out bytes.Buffer
				if err := WriteFrame(&out, v); err != nil {
					t.Fatalf("re-encoding %+v: %v", v, err)
				}
			}
		}
	})
}

// FuzzHostStream: whatever a guest sends as its open request, the host
// answers or closes, and keeps serving.
func FuzzHostStream(f *testing.F) {
	var b bytes.Buffer
	WriteFrame(&b, Open{Service: "nope", Version: 1})
	f.Add(b.Bytes())
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := &Host{Instance: "x", Services: map[string]Handler{"control": func(_ context.Context, s net.Conn) { s.Close() }}}
		a, b := net.Pipe()
		done := make(chan struct{})
		go func() { h.handle(context.Background(), a, discardLogger()); close(done) }()
		go func() { b.Write(data); b.Close() }()
		select {
		case <-done:
		case <-time.After(openTimeout + 5*time.Second):
			t.Fatal("host stream handler hung")
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// The host opens streams to services the guest serves (ingress); the
// guest refuses the others. Bytes are counted both ways.
func TestHostOpensGuestService(t *testing.T) {
	h, _, _ := pairWith(t, &Host{Instance: "web-0"}, map[string]Handler{
		"echo": func(_ context.Context, s net.Conn) {
			defer s.Close()
			buf := make([]byte, 5)
			if _, err := io.ReadFull(s, buf); err == nil {
				s.Write(bytes.ToUpper(buf))
			}
		},
	})
	s, err := h.Open("echo")
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("hello"))
	got, _ := io.ReadAll(s)
	if string(got) != "HELLO" {
		t.Errorf("echo = %q, want HELLO", got)
	}
	if _, err := h.Open("shell"); !errors.Is(err, ErrRefused) {
		t.Errorf("open of an unserved guest service: %v, want refused", err)
	}
	if h.Bytes.Load() == 0 {
		t.Error("no channel bytes counted")
	}
}

// A bandwidth limit paces the channel: 1 MiB at 2 MiB/s takes ~0.5s
// (minus the burst), not microseconds.
func TestChannelLimit(t *testing.T) {
	const size = 1 << 20
	_, g, _ := pairWith(t, &Host{Instance: "w", Limit: 2 << 20, Services: map[string]Handler{
		"sink": func(_ context.Context, s net.Conn) {
			io.Copy(io.Discard, s)
			s.Close()
		},
	}}, nil)
	s, err := g.Open("sink")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("1 MiB through a 2 MiB/s channel took %v; the limit is not applied", d)
	}
}
