package node

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/loomfabric/loom/fabric/pki"
)

var (
	testCA, _  = pki.NewCA("test")
	testKey, _ = pki.NewKey()
	testCSR, _ = pki.CSR(testKey, "test")
)

// serialOf is the serial of a PEM certificate.
func serialOf(t *testing.T, certPEM string) string {
	t.Helper()
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		t.Fatalf("not a PEM certificate: %q", certPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pki.Serial(c.SerialNumber)
}
