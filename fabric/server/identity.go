package server

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
	"github.com/loomfabric/loom/fabric/pki"
)

// clientCert is the node certificate a request authenticates with: the
// one presented in the TLS handshake (verified by it against the CA), or,
// on a write another replica forwarded (its own certificate presented),
// the one the node presented to that replica.
func (a *apiServer) clientCert(r *http.Request) (*x509.Certificate, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return nil, errors.New("no client certificate: nodes call with the certificate their registration got, over TLS")
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if _, ok := pki.ReplicaName(leaf); !ok {
		return leaf, nil
	}
	h := r.Header.Get(api.ClientCertHeader)
	if h == "" {
		return leaf, nil
	}
	der, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", api.ClientCertHeader, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", api.ClientCertHeader, err)
	}
	if a.cfg.ClientCAs == nil {
		return nil, errors.New("forwarded certificate, but this loomd has no CA to check it against")
	}
	if err := pki.Verify(c, a.cfg.ClientCAs); err != nil {
		return nil, fmt.Errorf("forwarded certificate: %w", err)
	}
	return c, nil
}

// nodeAuth checks the caller is node id: its certificate names id and is
// the one its last registration got (a node deleted or registered since
// has its older certificates refused).
func (a *apiServer) nodeAuth(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	c, err := a.clientCert(r)
	if err != nil {
		a.fail(w, r, http.StatusUnauthorized, "node %q: %v", id, err)
		return id, false
	}
	got, ok := pki.NodeID(c)
	if !ok {
		a.fail(w, r, http.StatusUnauthorized, "node %q: the client certificate (%s) names no node", id, c.Subject.CommonName)
		return id, false
	}
	if got != id {
		a.fail(w, r, http.StatusForbidden, "the certificate of node %s cannot act for node %s", got, id)
		return id, false
	}
	err = a.cfg.Registry.Authenticate(r.Context(), id, pki.Serial(c.SerialNumber))
	if errors.Is(err, node.ErrUnauthorized) {
		a.fail(w, r, http.StatusUnauthorized, "node %q: certificate %s revoked (the node was deleted or registered again since)", id, pki.Serial(c.SerialNumber))
		return id, false
	}
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "authenticating node %q: %v", id, err)
		return id, false
	}
	return id, true
}

// isNode reports whether the request carries a node's current certificate.
func (a *apiServer) isNode(r *http.Request) bool {
	c, err := a.clientCert(r)
	if err != nil {
		return false
	}
	id, ok := pki.NodeID(c)
	return ok && a.cfg.Registry.Authenticate(r.Context(), id, pki.Serial(c.SerialNumber)) == nil
}
