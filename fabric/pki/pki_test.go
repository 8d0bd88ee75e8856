package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestNodeCertificate(t *testing.T) {
	ca, err := NewCA("t")
	if err != nil {
		t.Fatal(err)
	}
	// The bundle round-trips, key included.
	b, err := ca.PEM()
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := ParseCA(b)
	if err != nil || ca2.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("ParseCA = %v, fingerprint %s want %s", err, ca2.Fingerprint(), ca.Fingerprint())
	}
	if _, err := ParseCA(ca.CertPEM); err == nil {
		t.Error("ParseCA without the key succeeded")
	}

	key, _ := NewKey()
	csr, err := CSR(key, "52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, serial, err := ca2.SignNode(csr, "n-1")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(certPEM))
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := NodeID(c); !ok || id != "n-1" {
		t.Errorf("NodeID = %q %v", id, ok)
	}
	if _, ok := ReplicaName(c); ok {
		t.Error("a node certificate names a replica")
	}
	if Serial(c.SerialNumber) != serial {
		t.Errorf("serial %s, want %s", Serial(c.SerialNumber), serial)
	}
	if err := Verify(c, ca.Pool()); err != nil {
		t.Errorf("Verify: %v", err)
	}
	other, _ := NewCA("other")
	if err := Verify(c, other.Pool()); err == nil {
		t.Error("a node certificate verified against another CA")
	}
	// The certificate is for the CSR's key.
	if !c.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("certificate not for the CSR's key")
	}
	// A replica's certificate serves and calls.
	sc, err := ca.ServerCert("r1", []string{"127.0.0.1", "loomd.example", "127.0.0.1", "[::1]"})
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := ReplicaName(sc.Leaf); !ok || name != "r1" || len(sc.Leaf.IPAddresses) != 2 || sc.Leaf.DNSNames[0] != "loomd.example" {
		t.Errorf("server certificate: replica %q %v, IPs %v, names %v", name, ok, sc.Leaf.IPAddresses, sc.Leaf.DNSNames)
	}
	if err := Verify(sc.Leaf, ca.Pool()); err != nil {
		t.Errorf("a replica's certificate is no client certificate: %v", err)
	}
}

func TestCheckCSR(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakCSR, _ := CSR(weak, "x")
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224CSR, _ := CSR(p224, "x")
	key, _ := NewKey()
	good, _ := CSR(key, "x")
	blk, _ := pem.Decode([]byte(good))
	blk.Bytes[len(blk.Bytes)-3] ^= 0xff // the signature
	tampered := string(pem.EncodeToMemory(blk))
	for name, tc := range map[string]struct{ csr, want string }{
		"empty":     {"", "missing"},
		"not PEM":   {"hello", "PEM"},
		"a cert":    {"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "CERTIFICATE REQUEST"},
		"garbage":   {"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "csr:"},
		"tampered":  {tampered, "signature"},
		"weak RSA":  {weakCSR, "1024 bits"},
		"P-224":     {p224CSR, "P-256"},
		"oversized": {strings.Repeat("A", MaxCSRBytes+1), "more than"},
	} {
		if _, err := CheckCSR(tc.csr); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: CheckCSR = %v, want an error with %q", name, err, tc.want)
		}
	}
	if _, err := CheckCSR(good); err != nil {
		t.Errorf("good CSR: %v", err)
	}
}
