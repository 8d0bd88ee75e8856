package server

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/pki"
)

// The tests' CA and the one key every test node's CSR is for.
var (
	testCA, _  = pki.NewCA("test")
	testKey, _ = pki.NewKey()
	testCSR, _ = pki.CSR(testKey, "test")
)

// serve runs h over TLS with a certificate of testCA's, asking clients
// for theirs as loomd does.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	cert, err := testCA.ServerCert("test", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = testCA.ServerTLS(cert)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// asNode is the "token" call passes for a node: its certificate, which
// call presents in TLS (with testKey).
func asNode(r api.RegisterResponse) string { return "cert:" + r.Certificate }

var nodeClients sync.Map // certificate PEM → *http.Client

// clientFor is the client call uses: a node's (token from asNode) or the
// server's own (operator and enrollment tokens).
func clientFor(t *testing.T, srv *httptest.Server, token string) (*http.Client, string) {
	certPEM, ok := strings.CutPrefix(token, "cert:")
	if !ok {
		return srv.Client(), token
	}
	if c, ok := nodeClients.Load(certPEM); ok {
		return c.(*http.Client), ""
	}
	kp, err := pki.KeyPEM(testKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(certPEM), kp)
	if err != nil {
		t.Fatalf("node certificate: %v", err)
	}
	cfg, err := pki.ClientTLS(testCA.CertPEM, &cert)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	nodeClients.Store(certPEM, c)
	return c, ""
}

// withCSR adds testCSR to a registration body that has no "csr".
func withCSR(path, body string) string {
	if path != "/v1/nodes/register" || !strings.HasPrefix(body, "{") || strings.Contains(body, `"csr"`) {
		return body
	}
	return `{"csr":` + strconv.Quote(testCSR) + "," + body[1:]
}
