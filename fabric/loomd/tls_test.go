package loomd

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/pki"
)

// TestTLSOnly: the API answers over TLS only, with a certificate of the
// cluster's CA (kept across restarts); plain HTTP on the same port gets
// no data; a client that does not trust the CA gets nowhere.
func TestTLSOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs loomd")
	}
	addr := freeAddr(t)
	dir := t.TempDir()
	cfg := &Config{DataDir: dir, API: addr}
	start := func() func() { return inProcess(t, cfg) }
	ready := func() (*client.Client, []byte) { return operator(t, cfg) }
	stop := start()
	c, ca := ready()

	// Plain HTTP: the API refuses with a pointer to https, no data.
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body), "https://") || strings.Contains(string(body), "[") {
		t.Errorf("plain-HTTP API call = %d %q, want 426 pointing at https and no data", resp.StatusCode, body)
	}
	// …but the netboot files' path is served over plain HTTP (none here:
	// no netboot interface, so 404 from the API's router, not 426).
	if resp, err := http.Get("http://" + addr + "/boot/vmlinuz"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("plain GET /boot/vmlinuz = %v %v, want 404", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	// A client that does not trust the CA fails the handshake.
	if _, err := (&client.Client{BaseURL: "https://" + addr, Token: c.Token, Failover: time.Nanosecond}).Nodes(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("client without the CA: %v, want a certificate error", err)
	}
	// HTTP/2 is offered (a node's goal long-poll and heartbeats share one
	// connection).
	tc, _ := pki.ClientTLS(ca, nil)
	tc.NextProtos = []string{"h2", "http/1.1"}
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Errorf("negotiated %q, want h2", p)
	}
	conn.Close()

	// The CA outlives a restart.
	stop()
	stop = start()
	defer stop()
	if _, ca2 := ready(); string(ca2) != string(ca) {
		t.Error("the CA changed across a restart")
	}
}
