package server

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/pki"
)

// TestNodeIdentity: node calls need the node's own, current certificate;
// registration needs a good CSR; a deleted node's certificate is refused
// at once; a certificate of another CA never gets through the handshake;
// the forwarded-certificate header is believed from replicas only.
func TestNodeIdentity(t *testing.T) {
	srv, _ := newAPI(t)
	var a, b api.RegisterResponse
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, regBody, &a); code != 200 {
		t.Fatalf("register = %d", code)
	}
	other := strings.NewReplacer("52:54:00:AA:00:01", "52:54:00:cc:00:01", "52:54:00:aa:00:01", "52:54:00:cc:00:01", "52:54:00:aa:00:02", "52:54:00:cc:00:02",
		"4CAE4D26-B1C8-4450-B8EF-3D290B8D4695", "5CAE4D26-B1C8-4450-B8EF-3D290B8D4695").Replace(regBody)
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, other, &b); code != 200 || b.NodeID == a.NodeID {
		t.Fatalf("second register = %d (%s)", code, b.NodeID)
	}
	blk, _ := pem.Decode([]byte(a.Certificate))
	if blk == nil {
		t.Fatalf("certificate %q: not PEM", a.Certificate)
	}
	status := "/v1/nodes/" + a.NodeID + "/status"

	// Bad CSRs: refused with the reason, nothing registered.
	foreignKey, _ := pki.NewKey()
	goodCSR, _ := pki.CSR(foreignKey, "x")
	tampered := strings.Replace(goodCSR, goodCSR[100:104], "AAAA", 1)
	for name, csr := range map[string]string{"missing": "", "not PEM": "hello", "tampered": tampered, "oversized": strings.Repeat("A", pki.MaxCSRBytes+1)} {
		body := `{"csr":` + strconv.Quote(csr) + `,` + regBody[1:]
		var e api.Error
		if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, body, &e); code != 400 || !strings.Contains(e.Message, "csr") {
			t.Errorf("register with a %s CSR = %d %q, want 400 naming the csr", name, code, e.Message)
		}
	}

	// No certificate: 401, whatever token.
	for _, tok := range []string{"", opToken, enrollToken} {
		var e api.Error
		if code := call(t, srv, "POST", status, tok, `{}`, &e); code != 401 || !strings.Contains(e.Message, "certificate") {
			t.Errorf("heartbeat without a certificate (token %q) = %d %q, want 401", tok, code, e.Message)
		}
	}
	// Its own certificate: 200 on its routes, 403 on another's.
	if code := call(t, srv, "POST", status, asNode(a), `{}`, nil); code != 200 {
		t.Errorf("heartbeat = %d", code)
	}
	if code := call(t, srv, "GET", "/v1/nodes/"+b.NodeID+"/goal", asNode(a), "", nil); code != 403 {
		t.Errorf("goal of another node = %d, want 403", code)
	}
	// A node certificate is no operator credential.
	if code := call(t, srv, "GET", "/v1/nodes", asNode(a), "", nil); code != 401 {
		t.Errorf("list nodes with a node certificate = %d, want 401", code)
	}

	// A forged forwarding header from a node is not believed: the
	// connection's own certificate (a's) counts, so b's routes stay shut.
	hc, _ := clientFor(t, srv, asNode(a))
	req, _ := http.NewRequest("POST", srv.URL+"/v1/nodes/"+b.NodeID+"/status", strings.NewReader(`{}`))
	bb, _ := pem.Decode([]byte(b.Certificate))
	req.Header.Set(api.ClientCertHeader, base64.StdEncoding.EncodeToString(bb.Bytes))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("heartbeat for b with a's certificate and b's in %s = %d, want 403", api.ClientCertHeader, resp.StatusCode)
	}
	// From a replica's certificate the header is believed (writes
	// forwarded to the leader), and checked against the CA.
	rc, err := testCA.ServerCert("r2", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	rcfg, _ := pki.ClientTLS(testCA.CertPEM, &rc)
	replica := &http.Client{Transport: &http.Transport{TLSClientConfig: rcfg}}
	forward := func(certDER []byte) int {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/nodes/"+b.NodeID+"/status", strings.NewReader(`{}`))
		req.Header.Set(api.ClientCertHeader, base64.StdEncoding.EncodeToString(certDER))
		resp, err := replica.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := forward(bb.Bytes); code != 200 {
		t.Errorf("b's heartbeat forwarded by a replica = %d, want 200", code)
	}
	otherCA, _ := pki.NewCA("other")
	forged, _, err := otherCA.SignNode(testCSR, b.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := pem.Decode([]byte(forged))
	if code := forward(fb.Bytes); code != 401 {
		t.Errorf("a forwarded certificate of another CA = %d, want 401", code)
	}

	// A certificate of another CA is never presented as one of this
	// fabric's (the server names its CA; a client forced to send it
	// fails the handshake).
	kp, _ := pki.KeyPEM(testKey)
	fc, err := tls.X509KeyPair([]byte(forged), kp)
	if err != nil {
		t.Fatal(err)
	}
	fcfg, _ := pki.ClientTLS(testCA.CertPEM, &fc)
	if resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: fcfg}}).Post(srv.URL+"/v1/nodes/"+b.NodeID+"/status", "application/json", strings.NewReader(`{}`)); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("heartbeat with a certificate of another CA = %d, want 401", resp.StatusCode)
		}
	}
	fcfg.Certificates = nil
	fcfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &fc, nil }
	if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: fcfg}}).Post(srv.URL+"/v1/nodes/"+b.NodeID+"/status", "application/json", strings.NewReader(`{}`)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a certificate of another CA presented anyway: %v, want a failed handshake", err)
	}

	// Deleting the node revokes its certificate at once.
	if code := call(t, srv, "DELETE", "/v1/nodes/"+a.NodeID, opToken, "", nil); code != 204 {
		t.Fatalf("delete = %d", code)
	}
	var e api.Error
	if code := call(t, srv, "POST", status, asNode(a), `{}`, &e); code != 401 || !strings.Contains(e.Message, "revoked") {
		t.Errorf("heartbeat of a deleted node = %d %q, want 401 revoked", code, e.Message)
	}
	if code := call(t, srv, "GET", "/v1/nodes/"+a.NodeID, opToken, "", nil); code != 404 {
		t.Errorf("deleted node read = %d, want 404", code)
	}
	if code := call(t, srv, "DELETE", "/v1/nodes/"+a.NodeID, opToken, "", &e); code != 404 {
		t.Errorf("deleting it again = %d, want 404", code)
	}
	// The machine registers again as a new node.
	var again api.RegisterResponse
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, regBody, &again); code != 200 || again.NodeID == a.NodeID {
		t.Errorf("registering the deleted machine = %d node %s, want a new node", code, again.NodeID)
	}
}
