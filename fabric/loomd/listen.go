package loomd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/loomfabric/loom/fabric/pki"
	"github.com/loomfabric/loom/fabric/store"
)

// CAFile is where loomd writes the cluster's CA certificate in its data
// directory (for the CLI: loom --ca-file).
const CAFile = "ca.pem"

// clusterCA is the cluster's CA: made by the first replica to start and
// kept in the store (any replica's first start takes the stored one).
// Its certificate is written to the data directory.
func clusterCA(ctx context.Context, st *store.Store, dataDir, name string) (*pki.CA, error) {
	fresh, err := pki.NewCA("loom " + name)
	if err != nil {
		return nil, err
	}
	bundle, err := fresh.PEM()
	if err != nil {
		return nil, err
	}
	shared, err := st.SharedSecret(ctx, "ca", string(bundle))
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCA([]byte(shared))
	if err != nil {
		return nil, fmt.Errorf("the cluster's CA in the store: %w", err)
	}
	path := filepath.Join(dataDir, CAFile)
	if old, err := os.ReadFile(path); err != nil || string(old) != string(ca.CertPEM) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, ca.CertPEM, 0o644); err != nil {
			return nil, fmt.Errorf("writing the CA certificate: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("writing the CA certificate: %w", err)
		}
	}
	return ca, nil
}

// certHosts are the names and addresses this replica's certificate is
// for: the API's listen address, the URLs it is advertised at, the
// netboot address, loopback and the host name, and Config.TLSNames.
func (c *Config) certHosts(netbootIP net.IP, advertise string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	if h, _, err := net.SplitHostPort(c.apiAddr()); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, h)
		}
	}
	if netbootIP != nil {
		hosts = append(hosts, netbootIP.String())
	}
	for _, u := range append(strings.Split(c.FabricURL, ","), advertise) {
		if h := urlHost(u); h != "" {
			hosts = append(hosts, h)
		}
	}
	return append(hosts, c.TLSNames...)
}

// urlHost is the host of a URL ("" if none).
func urlHost(u string) string {
	u = strings.TrimSpace(u)
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return ""
	}
	hostport, _, _ := strings.Cut(rest, "/")
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

// splitTLS divides a listener's connections by their first byte: TLS
// handshakes (0x16) to the one listener, plain HTTP to the other, so that
// one port serves the API over TLS and the netboot files (which firmware
// fetches over plain HTTP) without it.
type splitTLS struct {
	ln        net.Listener
	tls       *subListener
	plain     *subListener
	closeOnce sync.Once
	log       *slog.Logger
}

func newSplitTLS(ln net.Listener, log *slog.Logger) *splitTLS {
	s := &splitTLS{ln: ln, log: log}
	done := make(chan struct{})
	s.tls = &subListener{parent: s, conns: make(chan net.Conn), done: done}
	s.plain = &subListener{parent: s, conns: make(chan net.Conn), done: done}
	go s.run(done)
	return s
}

func (s *splitTLS) run(done chan struct{}) {
	defer s.closeOnce.Do(func() { close(done) })
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		go s.route(conn, done)
	}
}

// route waits (10 s at most) for the connection's first byte.
func (s *splitTLS) route(conn net.Conn, done chan struct{}) {
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(conn, 1)
	b, err := br.Peek(1)
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return
	}
	to := s.plain
	if b[0] == 0x16 {
		to = s.tls
	}
	select {
	case to.conns <- &peekedConn{Conn: conn, r: br}:
	case <-done:
		conn.Close()
	}
}

func (s *splitTLS) Close() error {
	err := s.ln.Close()
	s.closeOnce.Do(func() { close(s.tls.done) })
	return err
}

type subListener struct {
	parent *splitTLS
	conns  chan net.Conn
	done   chan struct{}
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *subListener) Close() error   { return l.parent.Close() }
func (l *subListener) Addr() net.Addr { return l.parent.ln.Addr() }

// peekedConn is a connection whose first byte was read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// plainOnly serves the netboot files over plain HTTP and refuses the API
// there: it is TLS only.
func plainOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.HasPrefix(r.URL.Path, "/boot/") {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUpgradeRequired)
		fmt.Fprintf(w, "{\"message\": %q}\n", "loomd's API is served over TLS only: use https://"+r.Host+r.URL.Path+" (plain HTTP serves the netboot files under /boot/)")
	})
}

// peerTLS is how this replica calls the others (forwarded writes, blob
// fetches): the CA as root, its own certificate as the client's.
func peerTLS(ca *pki.CA, cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}}
}
