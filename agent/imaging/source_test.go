package imaging

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestHTTPSourceOverTLS: a TLS configuration shared with an HTTP/2 client
// (its NextProtos offering h2) still fetches ranges.
func TestHTTPSourceOverTLS(t *testing.T) {
	blob := bytes.Repeat([]byte("0123456789"), 1000)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	cfg := &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}}
	s := &HTTPSource{URL: srv.URL, TLS: cfg}
	for _, off := range []int64{0, 5000, 9990} {
		rc, err := s.Open(context.Background(), off, 10)
		if err != nil {
			t.Fatalf("range at %d: %v", off, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, blob[off:off+10]) {
			t.Errorf("range at %d = %q %v", off, got, err)
		}
	}
	if len(cfg.NextProtos) != 2 {
		t.Errorf("the caller's TLS configuration was changed: %v", cfg.NextProtos)
	}
}
