package channel

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// openTimeout bounds the open/answer exchange on a new stream.
const openTimeout = 10 * time.Second

func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 15 * time.Second
	return c
}

// Handler serves one stream the guest opened to a service.
type Handler func(ctx context.Context, s net.Conn)

// Host is the host end of one guest's channel.
type Host struct {
	// Instance names the guest (sent in the host's hello).
	Instance string
	// Services the guest may open, by name; "hello" is built in. Anything
	// else is refused.
	Services map[string]Handler
	// OnHello is called with each hello the guest sends. Default: nothing.
	OnHello func(Hello)
	Log     *slog.Logger

	// Limit caps the channel's bandwidth in bytes per second, each way
	// (0 = unlimited), so one guest cannot take the host's links.
	Limit int
	// Refused counts refused open requests.
	Refused atomic.Int64
	// Bytes counts bytes carried both ways (for metering).
	Bytes atomic.Uint64

	sess atomic.Pointer[yamux.Session]
}

// Open opens a stream to a service the guest serves (ingress).
func (h *Host) Open(service string) (net.Conn, error) {
	sess := h.sess.Load()
	if sess == nil || sess.IsClosed() {
		return nil, fmt.Errorf("channel %s: no session with the guest", h.Instance)
	}
	return openStream(sess, service)
}

// Serve runs the host end over conn (the serial port's socket) until the
// session ends or ctx is cancelled. It returns nil when the guest goes away.
func (h *Host) Serve(ctx context.Context, conn io.ReadWriteCloser) error {
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sess, err := yamux.Server(meter(conn, h.Limit, &h.Bytes), yamuxConfig())
	if err != nil {
		return err
	}
	defer sess.Close()
	h.sess.Store(sess)
	defer h.sess.CompareAndSwap(sess, nil)
	go func() {
		select {
		case <-ctx.Done():
		case <-sess.CloseChan():
		}
		sess.Close()
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if ctx.Err() != nil || sess.IsClosed() {
				return nil
			}
			return fmt.Errorf("channel %s: %w", h.Instance, err)
		}
		go h.handle(ctx, st, log)
	}
}

func (h *Host) handle(ctx context.Context, st net.Conn, log *slog.Logger) {
	services := map[string]Handler{"hello": h.hello(log)}
	for k, v := range h.Services {
		if k != "hello" {
			services[k] = v
		}
	}
	serveStream(ctx, st, services, h.Instance, &h.Refused, log)
}

func (h *Host) hello(log *slog.Logger) Handler {
	return func(_ context.Context, st net.Conn) {
		defer st.Close()
		st.SetDeadline(time.Now().Add(openTimeout))
		var g Hello
		if ReadFrame(st, &g) != nil {
			return
		}
		if g.Version != Version || g.Side != "guest" {
			log.Warn("channel: bad hello", "instance", h.Instance, "hello", g)
			return
		}
		seed := make([]byte, EntropyBytes)
		_, _ = rand.Read(seed) // crypto/rand does not fail on Linux
		if err := WriteFrame(st, Hello{Version: Version, Side: "host", Instance: h.Instance, Time: time.Now().UnixNano(), Entropy: seed}); err != nil {
			log.Warn("channel: hello not answered", "instance", h.Instance, "err", err)
			return
		}
		if h.OnHello != nil {
			h.OnHello(g)
		}
	}
}

// serveStream reads a stream's open request and hands the stream to the
// service's handler, or refuses it (counted in refused, logged).
func serveStream(ctx context.Context, st net.Conn, services map[string]Handler, instance string, refused *atomic.Int64, log *slog.Logger) {
	st.SetDeadline(time.Now().Add(openTimeout))
	var o Open
	if err := ReadFrame(st, &o); err != nil {
		log.Warn("channel: bad open request", "instance", instance, "err", err)
		st.Close()
		return
	}
	refuse := func(msg string) {
		if refused != nil {
			refused.Add(1)
		}
		log.Warn("channel: refused a stream", "instance", instance, "service", o.Service, "reason", msg)
		_ = WriteFrame(st, Answer{Error: msg}) // a peer that misses the refusal sees the stream closed
		st.Close()
	}
	if o.Version != Version {
		refuse(fmt.Sprintf("protocol version %d not spoken (this side speaks %d)", o.Version, Version))
		return
	}
	handler, ok := services[o.Service]
	if !ok {
		refuse(fmt.Sprintf("service %q not offered", o.Service))
		return
	}
	if err := WriteFrame(st, Answer{OK: true}); err != nil {
		st.Close()
		return
	}
	st.SetDeadline(time.Time{})
	handler(ctx, st)
}

// Guest is the guest end of the channel.
type Guest struct {
	sess *yamux.Session
	Host Hello // what the host said in its hello
}

// Dial starts the guest end over conn (the serial port), says hello, and
// serves the streams the host opens to services (e.g. "ingress"); anything
// else the host asks for is refused.
func Dial(conn io.ReadWriteCloser, hello Hello, services map[string]Handler, log *slog.Logger) (*Guest, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sess, err := yamux.Client(conn, yamuxConfig())
	if err != nil {
		return nil, err
	}
	g := &Guest{sess: sess}
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go serveStream(context.Background(), st, services, hello.Instance, nil, log)
		}
	}()
	st, err := g.Open("hello")
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("channel hello: %w", err)
	}
	defer st.Close()
	hello.Version, hello.Side = Version, "guest"
	st.SetDeadline(time.Now().Add(openTimeout))
	if err := WriteFrame(st, hello); err != nil {
		sess.Close()
		return nil, fmt.Errorf("channel hello: %w", err)
	}
	if err := ReadFrame(st, &g.Host); err != nil {
		sess.Close()
		return nil, fmt.Errorf("channel hello: %w", err)
	}
	if g.Host.Version != Version || g.Host.Side != "host" {
		sess.Close()
		return nil, fmt.Errorf("channel hello: host says %+v", g.Host)
	}
	return g, nil
}

// Open opens a stream to a host service.
func (g *Guest) Open(service string) (net.Conn, error) { return openStream(g.sess, service) }

func openStream(sess *yamux.Session, service string) (net.Conn, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return nil, err
	}
	st.SetDeadline(time.Now().Add(openTimeout))
	var a Answer
	if err := WriteFrame(st, Open{Service: service, Version: Version}); err != nil {
		st.Close()
		return nil, err
	}
	if err := ReadFrame(st, &a); err != nil {
		st.Close()
		return nil, err
	}
	if !a.OK {
		st.Close()
		return nil, fmt.Errorf("%w: %s", ErrRefused, a.Error)
	}
	st.SetDeadline(time.Time{})
	return st, nil
}

// Done is closed when the session ends.
func (g *Guest) Done() <-chan struct{} { return g.sess.CloseChan() }

// Close ends the session.
func (g *Guest) Close() error { return g.sess.Close() }
