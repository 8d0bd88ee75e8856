// Package server is loomd's HTTP API. The protocol is documented in
// package api; this package maps it onto the node registry, authenticates
// callers and turns every failure into a JSON error with a 4xx/5xx status.
package server

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
	"github.com/loomfabric/loom/fabric/store"
)

// Registry is what the API needs of the node life cycle.
type Registry interface {
	Register(ctx context.Context, reg api.Registration) (api.Node, string, error)
	// Authenticate checks serial is node id's current certificate.
	Authenticate(ctx context.Context, id, serial string) error
	Report(ctx context.Context, id string, st api.Status) error
	Goal(ctx context.Context, id string) (api.Goal, error)
	WaitGoal(ctx context.Context, id string, rev int64) error
	Provision(ctx context.Context, id, profile string) (api.Node, error)
	Reprovision(ctx context.Context, id string) (api.Node, error)
	List(ctx context.Context) ([]api.Node, error)
	Get(ctx context.Context, id string) (api.Node, error)
	HeartbeatInterval() time.Duration
}

// Config wires the API.
type Config struct {
	Registry Registry
	// OperatorToken authorises operator calls. Required.
	OperatorToken string
	// EnrollToken authorises registration. Required.
	EnrollToken string
	// ClientCAs checks node certificates forwarded by other replicas
	// (those presented directly are checked by the TLS handshake).
	ClientCAs *x509.CertPool
	// Boot, if set, serves GET /boot/{file} without authentication.
	Boot http.Handler
	// Images, if set, serves /v1/images.
	Images Images
	// Profiles, if set, serves /v1/profiles.
	Profiles Profiles
	// VMs, if set, serves /v1/vms.
	VMs VMs
	// Services, if set, serves the service model (services, instances).
	Services Services
	// Queues, if set, serves the services' queues.
	Queues Queues
	// Power and Credentials, if both set, serve BMC power and credentials.
	Power       Power
	Credentials Credentials
	// Racks, if set, serves /v1/racks.
	Racks Racks
	// Leases, if set, serves GET /v1/leases.
	Leases interface {
		Leases(ctx context.Context) ([]api.Lease, error)
	}
	// Cluster, if set, serves /v1/cluster (the replicas).
	Cluster Cluster
	// Tokens, if set, serves /v1/tokens and admits the named tokens
	// (each with its role) beside OperatorToken.
	Tokens Tokens
	// Audit, if set, records every write an operator token or a
	// registration makes, and serves GET /v1/audit (admin).
	Audit Audit
	// Events, if set, serves GET /v1/events (viewer).
	Events Events
	// ConsoleDir, if set, holds the servers' console logs, one per
	// machine named by a MAC (see console.go): GET /v1/nodes/{id}/console.
	ConsoleDir string
	// Metrics, if set, serves GET /metrics (the Prometheus exposition) to
	// operator tokens of any role.
	Metrics http.Handler
	// Heartbeat, if set, is told when each heartbeat's handling begins
	// and (the func it returns) ends: the controller's pacer listens
	// (service.Pacer).
	Heartbeat func() (end func())
}

// New returns the API handler.
func New(cfg Config, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &apiServer{cfg: cfg, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/nodes/register", a.register)
	mux.HandleFunc("POST /v1/nodes/{id}/status", a.status)
	mux.HandleFunc("GET /v1/nodes", a.operator(a.listNodes))
	mux.HandleFunc("GET /v1/nodes/{id}", a.operator(a.getNode))
	if cfg.Images != nil {
		a.routeImages(mux)
	}
	if cfg.Profiles != nil {
		a.routeProfiles(mux)
	}
	if cfg.VMs != nil {
		a.routeVMs(mux)
	}
	if cfg.Services != nil {
		a.routeServices(mux)
	}
	if cfg.Queues != nil {
		a.routeQueues(mux)
	}
	if cfg.Leases != nil {
		mux.HandleFunc("GET /v1/leases", a.operator(a.listLeases))
	} else {
		mux.HandleFunc("GET /v1/leases", a.operator(func(w http.ResponseWriter, r *http.Request) {
			a.fail(w, r, http.StatusNotFound, "this loomd hands out no DHCP leases (it runs without --netboot-interface, or with --dhcp-mode proxy)")
		}))
	}
	if cfg.Power != nil && cfg.Credentials != nil {
		a.routePower(mux)
	}
	if cfg.Racks != nil {
		a.routeRacks(mux)
	}
	if cfg.Cluster != nil {
		a.routeCluster(mux)
	}
	if cfg.Tokens != nil {
		a.routeTokens(mux)
	}
	if cfg.Audit != nil {
		mux.HandleFunc("GET /v1/audit", a.admin(a.listAudit))
	}
	if cfg.Events != nil {
		mux.HandleFunc("GET /v1/events", a.operator(a.listEvents))
	}
	if cfg.Metrics != nil {
		mux.HandleFunc("GET /metrics", a.operator(cfg.Metrics.ServeHTTP))
	}
	if cfg.ConsoleDir != "" {
		mux.HandleFunc("GET /v1/nodes/{id}/console", a.operator(a.console))
	}
	mux.HandleFunc("GET /v1/nodes/{id}/goal", a.goal)
	mux.HandleFunc("POST /v1/nodes/{id}/provision", a.operator(a.provision))
	mux.HandleFunc("POST /v1/nodes/{id}/reprovision", a.operator(a.reprovision))
	if _, ok := cfg.Registry.(Deleter); ok {
		mux.HandleFunc("DELETE /v1/nodes/{id}", a.operator(a.deleteNode))
	}
	if _, ok := cfg.Registry.(Decommissioner); ok {
		mux.HandleFunc("POST /v1/nodes/{id}/decommission", a.operator(a.decommission))
	}
	if cfg.Boot != nil {
		mux.Handle("GET /boot/{file}", cfg.Boot)
	}
	return mux
}

type apiServer struct {
	cfg Config
	log *slog.Logger
}

// fail writes a JSON error. A failure because this replica no longer
// leads, or the store cannot answer for now (store.Unavailable of an
// error among args: leadership moved while the request ran, an etcd
// election) is a 503 the client may retry, on another replica.
func (a *apiServer) fail(w http.ResponseWriter, r *http.Request, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for _, v := range args {
		if err, ok := v.(error); ok && code >= 500 && store.Unavailable(err) {
			code = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
		}
	}
	if code >= 500 {
		a.log.Error("api", "method", r.Method, "path", r.URL.Path, "status", code, "err", msg)
	} else {
		a.log.Info("api: rejected", "method", r.Method, "path", r.URL.Path, "from", r.RemoteAddr, "status", code, "err", msg)
	}
	writeJSON(w, code, api.Error{Message: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the status is sent; a client gone mid-body is not ours to report
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

func tokenOK(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// decode reads a bounded JSON body into v.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("body larger than %d bytes", api.MaxBodyBytes)
		}
		return fmt.Errorf("decoding body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("decoding body: trailing data after the JSON object")
	}
	return nil
}

func (a *apiServer) register(w http.ResponseWriter, r *http.Request) {
	if !tokenOK(bearer(r), a.cfg.EnrollToken) {
		a.fail(w, r, http.StatusUnauthorized, "enrollment token missing or wrong")
		return
	}
	a.audited(caller{name: "enroll"}, w, r, a.registerNode)
}

func (a *apiServer) registerNode(w http.ResponseWriter, r *http.Request) {
	var reg api.Registration
	if err := decode(w, r, &reg); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if err := node.Validate(&reg); err != nil {
		a.fail(w, r, http.StatusBadRequest, "registration: %v", err)
		return
	}
	n, cert, err := a.cfg.Registry.Register(r.Context(), reg)
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "registering %s: %v", reg.MAC, err)
		return
	}
	writeJSON(w, http.StatusOK, api.RegisterResponse{NodeID: n.ID, Certificate: cert, HeartbeatInterval: api.Duration(a.cfg.Registry.HeartbeatInterval())})
}

func (a *apiServer) status(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Heartbeat != nil {
		defer a.cfg.Heartbeat()()
	}
	// Heartbeats read the store's copies as they are (store.Relaxed).
	r = r.WithContext(store.Relaxed(r.Context()))
	id, ok := a.nodeAuth(w, r)
	if !ok {
		return
	}
	var st api.Status
	if err := decode(w, r, &st); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if len(st.Reason) > 4096 {
		st.Reason = st.Reason[:4096]
	}
	err := a.cfg.Registry.Report(r.Context(), id, st)
	if errors.Is(err, node.ErrConflict) {
		a.fail(w, r, http.StatusConflict, "node %s: %v", id, err)
		return
	}
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "heartbeat of %s: %v", id, err)
		return
	}
	writeJSON(w, http.StatusOK, api.StatusResponse{HeartbeatInterval: api.Duration(a.cfg.Registry.HeartbeatInterval())})
}

func (a *apiServer) listNodes(w http.ResponseWriter, r *http.Request) {
	nodes, err := a.cfg.Registry.List(r.Context())
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "listing nodes: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, filterRack(nodes, r.URL.Query().Get("rack")))
}

func (a *apiServer) listLeases(w http.ResponseWriter, r *http.Request) {
	leases, err := a.cfg.Leases.Leases(r.Context())
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "listing leases: %v", err)
		return
	}
	if leases == nil {
		leases = []api.Lease{}
	}
	writeJSON(w, http.StatusOK, leases)
}

func (a *apiServer) getNode(w http.ResponseWriter, r *http.Request) {
	n, ok := a.node(w, r, r.PathValue("id"))
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, n)
}

// node reads node id, answering 404 or 500 itself if it cannot.
func (a *apiServer) node(w http.ResponseWriter, r *http.Request, id string) (api.Node, bool) {
	n, err := a.cfg.Registry.Get(r.Context(), id)
	if store.IsNotFound(err) {
		a.fail(w, r, http.StatusNotFound, "node %q not found", id)
		return n, false
	}
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "reading node %q: %v", id, err)
		return n, false
	}
	return n, true
}
