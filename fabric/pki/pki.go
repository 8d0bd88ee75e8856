// Package pki is the fabric's certificate authority: one ECDSA P-256 CA
// per cluster (kept in the store), a server certificate for each loomd
// replica, and a client certificate for each registered node, signed from
// the CSR its agent sends with its registration.
//
// Identities are URI subject alternative names:
//
//	loom:node:<id>       a node (client authentication only)
//	loom:replica:<name>  a loomd replica (server and client: replicas
//	                     forward writes to the leader with it)
//
// Agents use the small part (NewKey, CSR, ClientTLS); it pulls in nothing
// the standard library's TLS does not already.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// Validity of the certificates issued.
const (
	CAValidity     = 20 * 365 * 24 * time.Hour
	ServerValidity = 365 * 24 * time.Hour
	NodeValidity   = 5 * 365 * 24 * time.Hour
)

// URI schemes of the identities.
const (
	nodePrefix    = "loom:node:"
	replicaPrefix = "loom:replica:"
)

// CA is the cluster's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// NewCA makes a CA named after the cluster.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name + " CA", Organization: []string{"Loom"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// PEM is the CA's certificate and key, in one PEM bundle (what the store
// keeps).
func (ca *CA) PEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return append(append([]byte{}, ca.CertPEM...), pemBlock("PRIVATE KEY", der)...), nil
}

// ParseCA reads a bundle made by PEM.
func ParseCA(bundle []byte) (*CA, error) {
	var ca CA
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("CA certificate: %w", err)
			}
			ca.Cert, ca.CertPEM = cert, pemBlock("CERTIFICATE", b.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("CA key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, errors.New("CA key: not a signing key")
			}
			ca.key = s
		}
	}
	if ca.Cert == nil || ca.key == nil || !ca.Cert.IsCA {
		return nil, errors.New("CA bundle: want a CA certificate and its private key")
	}
	return &ca, nil
}

// Pool is a pool holding the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Fingerprint is the sha256 of the CA certificate, hex.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Fingerprint is the sha256 of a certificate's DER, hex.
func Fingerprint(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:])
}

// ServerCert issues replica name's certificate for the host names and
// addresses in hosts (DNS names or IPs).
func (ca *CA) ServerCert(name string, hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "loomd " + name, Organization: []string{"Loom"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServerValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: "loom", Opaque: "replica:" + name}},
	}
	seen := map[string]bool{}
	for _, h := range hosts {
		h = strings.Trim(h, "[]")
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerTLS is the API's TLS configuration: this certificate, clients'
// certificates verified against the CA when they send one (nodes do,
// operators use tokens), TLS 1.2 at least.
func (ca *CA) ServerTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// MaxCSRBytes bounds a CSR's PEM.
const MaxCSRBytes = 8 << 10

// CheckCSR parses a PEM CSR and checks its signature and key.
func CheckCSR(csrPEM string) (*x509.CertificateRequest, error) {
	if csrPEM == "" {
		return nil, errors.New("csr is missing: agents send a certificate request with their registration (this agent is older than its loomd?)")
	}
	if len(csrPEM) > MaxCSRBytes {
		return nil, fmt.Errorf("csr: %d bytes, more than %d", len(csrPEM), MaxCSRBytes)
	}
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr: want one PEM block of type CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: signature does not verify: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errors.New("csr: ECDSA keys must be on P-256 or P-384")
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("csr: RSA key of %d bits; want 2048 or more", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("csr: unsupported key type %T", csr.PublicKey)
	}
	return csr, nil
}

// SignNode issues node id's client certificate for the key in csrPEM
// (whatever else the CSR asks for is ignored). It returns the PEM and
// the certificate's serial (hex), by which the fabric knows the node's
// current certificate.
func (ca *CA) SignNode(csrPEM, id string) (certPEM, serialHex string, err error) {
	csr, err := CheckCSR(csrPEM)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	sn := serial()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: "node " + id, Organization: []string{"Loom"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(NodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: "loom", Opaque: "node:" + id}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("node certificate: %w", err)
	}
	return string(pemBlock("CERTIFICATE", der)), Serial(sn), nil
}

// Serial is a serial number as the fabric keeps it (hex).
func Serial(n *big.Int) string { return n.Text(16) }

// NodeID is the node a certificate names ("" and false if it names none).
func NodeID(c *x509.Certificate) (string, bool) { return identity(c, nodePrefix) }

// ReplicaName is the replica a certificate names.
func ReplicaName(c *x509.Certificate) (string, bool) { return identity(c, replicaPrefix) }

func identity(c *x509.Certificate, prefix string) (string, bool) {
	if c == nil {
		return "", false
	}
	for _, u := range c.URIs {
		if v, ok := strings.CutPrefix(u.String(), prefix); ok && v != "" {
			return v, true
		}
	}
	return "", false
}

// Verify checks c was issued by the CA in pool for client use (for a
// certificate passed on by a replica rather than presented in a
// handshake).
func Verify(c *x509.Certificate, pool *x509.CertPool) error {
	_, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// NewKey makes a node's key (ECDSA P-256).
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// CSR is a PEM certificate request for key.
func CSR(key crypto.Signer, cn string) (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return "", fmt.Errorf("certificate request: %w", err)
	}
	return string(pemBlock("CERTIFICATE REQUEST", der)), nil
}

// KeyPEM is key as PKCS#8 PEM.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// Pool parses PEM CA certificates into a pool.
func Pool(caPEM []byte) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no PEM certificate in the CA file")
	}
	return p, nil
}

// ClientTLS is a client's TLS configuration: the fabric's CA as the only
// root, and cert (a node's) if given.
func ClientTLS(caPEM []byte, cert *tls.Certificate) (*tls.Config, error) {
	p, err := Pool(caPEM)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return c, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // crypto/rand never fails
	return n.Add(n, big.NewInt(1))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
