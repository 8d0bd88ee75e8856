package imaging

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// HTTPSource reads a blob over HTTP with Range requests.
type HTTPSource struct {
	URL   string
	Token string // sent as a Bearer token if set
	// TLS is for an https URL (the fabric's CA as root, the node's
	// certificate) when Client is unset.
	TLS *tls.Config
	// Client defaults to one without an overall timeout (images are large);
	// a stalled connection is caught by the transport's response timeout.
	Client *http.Client

	once sync.Once
}

var defaultClient = &http.Client{Transport: &http.Transport{
	Proxy:                 nil,
	ResponseHeaderTimeout: 30 * time.Second,
	MaxIdleConnsPerHost:   4,
}}

// Open implements Source.
func (s *HTTPSource) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	if s.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	}
	s.once.Do(func() {
		if s.Client == nil && s.TLS != nil {
			tr := defaultClient.Transport.(*http.Transport).Clone()
			// HTTP/1.1 (no ALPN): ranges go out on connections of their
			// own, and a config shared with an HTTP/2 client may offer h2,
			// which this transport would not speak.
			tr.TLSClientConfig = s.TLS.Clone()
			tr.TLSClientConfig.NextProtos = nil
			s.Client = &http.Client{Transport: tr}
		}
	})
	c := s.Client
	if c == nil {
		c = defaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusPartialContent {
		_ = resp.Body.Close() // the answer is refused anyway
		return nil, fmt.Errorf("GET %s bytes %d-%d: %s (want 206 Partial Content)", s.URL, off, off+n-1, resp.Status)
	}
	return resp.Body, nil
}

// FileSource reads a blob from a local file.
type FileSource struct{ F *os.File }

// Open implements Source.
func (s FileSource) Open(_ context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(s.F, off, n)), nil
}
