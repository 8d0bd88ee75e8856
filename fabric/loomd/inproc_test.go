package loomd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/pki"
)

// freeAddr is a free loopback address for loomd's API.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// inProcess runs loomd with cfg in this process until stop.
func inProcess(t *testing.T, cfg *Config) (stop func()) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs loomd")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cfg.Start(ctx, nil) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("loomd: %v", err)
		}
	}
}

// operator waits for cfg's loomd to answer over TLS and returns a client
// with its operator token, and its CA.
func operator(t *testing.T, cfg *Config) (*client.Client, []byte) {
	t.Helper()
	for i := 0; ; i++ {
		ca, _ := os.ReadFile(filepath.Join(cfg.DataDir, CAFile))
		tok, _ := os.ReadFile(filepath.Join(cfg.DataDir, OperatorTokenFile))
		if tc, err := pki.ClientTLS(ca, nil); err == nil && len(tok) > 0 {
			c := &client.Client{BaseURL: "https://" + cfg.API, Token: strings.TrimSpace(string(tok)), TLS: tc}
			if _, err := c.Nodes(context.Background()); err == nil {
				return c, ca
			}
		}
		if i > 300 {
			t.Fatal("loomd's API did not answer over TLS in 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// enroller is a client with cfg's enrollment token, as a new machine has.
func enroller(t *testing.T, cfg *Config, op *client.Client) *client.Client {
	t.Helper()
	enroll, err := os.ReadFile(filepath.Join(cfg.DataDir, EnrollTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return &client.Client{BaseURL: op.BaseURL, TLS: op.TLS, Token: strings.TrimSpace(string(enroll))}
}
