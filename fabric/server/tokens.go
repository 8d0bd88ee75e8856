package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// Tokens are the named operator tokens (the store has them).
type Tokens interface {
	CreateToken(ctx context.Context, t store.StoredToken) error
	Token(ctx context.Context, name string) (store.StoredToken, error)
	Tokens(ctx context.Context) ([]store.StoredToken, error)
	DeleteToken(ctx context.Context, name string) error
}

// Audit is where writes through the API are recorded.
type Audit interface {
	AppendAudit(ctx context.Context, rec api.AuditRecord) error
	Audit(ctx context.Context, since time.Time, limit int) ([]api.AuditRecord, error)
}

// BootstrapName is the name the data directory's operator token goes by
// (an admin: it makes the others).
const BootstrapName = "operator"

// caller is who a request comes from.
type caller struct {
	name string
	role api.Role
}

// tokenHash is what is stored of a token.
func tokenHash(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

// authOperator finds the caller of an operator request.
func (a *apiServer) authOperator(r *http.Request) (caller, bool) {
	name, role, ok := CheckToken(r.Context(), a.cfg.OperatorToken, a.cfg.Tokens, bearer(r))
	return caller{name, role}, ok
}

// CheckToken says whose operator token t is and with what role: the data
// directory's token (operator, an admin), or a named one ("NAME.SECRET",
// its hash compared with the stored one; tokens may be nil). A wrong,
// revoked or empty token is not ok.
func CheckToken(ctx context.Context, operator string, tokens Tokens, t string) (string, api.Role, bool) {
	if tokenOK(t, operator) {
		return BootstrapName, api.RoleAdmin, true
	}
	name, _, ok := strings.Cut(t, ".")
	if !ok || tokens == nil || store.ValidName(name) != nil {
		return "", "", false
	}
	st, err := tokens.Token(ctx, name)
	if err != nil {
		return "", "", false
	}
	if subtle.ConstantTimeCompare([]byte(tokenHash(t)), []byte(st.Hash)) != 1 {
		return "", "", false
	}
	return st.Name, st.Role, true
}

// need admits an operator token whose role allows need, and records the
// request in the audit log if it writes.
func (a *apiServer) need(role api.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := a.authOperator(r)
		if !ok {
			a.fail(w, r, http.StatusUnauthorized, "operator token missing, wrong or revoked")
			return
		}
		if !c.role.Allows(role) {
			a.audited(c, w, r, func(w http.ResponseWriter, r *http.Request) {
				a.fail(w, r, http.StatusForbidden, "token %s has the role %s: %s %s needs %s", c.name, c.role, r.Method, r.URL.Path, role)
			})
			return
		}
		a.audited(c, w, r, h)
	}
}

// operator admits callers allowed to read (GET) or write (the rest).
func (a *apiServer) operator(h http.HandlerFunc) http.HandlerFunc {
	read := a.need(api.RoleViewer, h)
	write := a.need(api.RoleOperator, h)
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			read(w, r)
			return
		}
		write(w, r)
	}
}

// admin admits admin tokens only.
func (a *apiServer) admin(h http.HandlerFunc) http.HandlerFunc { return a.need(api.RoleAdmin, h) }

// sinceLimit reads a log's since= (RFC 3339) and limit= (1 to 100,000;
// default 1,000) query parameters, answering 400 itself if one is bad.
func (a *apiServer) sinceLimit(w http.ResponseWriter, r *http.Request) (time.Time, int, bool) {
	q := r.URL.Query()
	var since time.Time
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			a.fail(w, r, http.StatusBadRequest, "since=%q: want an RFC 3339 time", s)
			return since, 0, false
		}
		since = t
	}
	limit := 1000
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100000 {
			a.fail(w, r, http.StatusBadRequest, "limit=%q: want 1 to 100000", s)
			return since, 0, false
		}
		limit = n
	}
	return since, limit, true
}

// statusWriter remembers the status and the start of an error's body.
type statusWriter struct {
	http.ResponseWriter
	code int
	body []byte
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if s.code >= 400 && len(s.body) < 1024 {
		s.body = append(s.body, b[:min(len(b), 1024-len(s.body))]...)
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// audited runs h and, for a write, records who made it and how it ended.
func (a *apiServer) audited(c caller, w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	if a.cfg.Audit == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
		h(w, r)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	start := time.Now()
	h(sw, r)
	rec := api.AuditRecord{Time: start.UTC(), Who: c.name, Role: c.role, Method: r.Method, Path: r.URL.Path, Status: cmp.Or(sw.code, http.StatusOK), From: r.RemoteAddr}
	if fwd := r.Header.Get("X-Forwarded-For"); fwd != "" && r.Header.Get(api.ForwardedHeader) != "" {
		rec.From = fwd
	}
	if rec.Status >= 400 {
		rec.Error = errorMessage(sw.body)
	}
	// The write is done; its record must not be lost to the client
	// going away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	if err := a.cfg.Audit.AppendAudit(ctx, rec); err != nil {
		a.log.Error("api: audit record lost", "who", c.name, "method", r.Method, "path", r.URL.Path, "status", rec.Status, "err", err)
	}
}

// errorMessage is the message of a JSON error body (or the body).
func errorMessage(b []byte) string {
	var e api.Error
	if err := json.Unmarshal(b, &e); err == nil && e.Message != "" {
		return e.Message
	}
	return strings.TrimSpace(string(b))
}

func (a *apiServer) routeTokens(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/tokens", a.admin(a.createToken))
	mux.HandleFunc("GET /v1/tokens", a.admin(a.listTokens))
	mux.HandleFunc("DELETE /v1/tokens/{name}", a.admin(a.revokeToken))
}

func (a *apiServer) createToken(w http.ResponseWriter, r *http.Request) {
	var req api.TokenCreate
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if err := store.ValidName(req.Name); err != nil || strings.Contains(req.Name, ".") {
		a.fail(w, r, http.StatusBadRequest, "token name %q: letters, digits, '-' and '_' only, 1 to 63", req.Name)
		return
	}
	if req.Name == BootstrapName {
		a.fail(w, r, http.StatusBadRequest, "token name %q is the data directory's token's", req.Name)
		return
	}
	role, err := api.ParseRole(string(req.Role))
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	c, _ := a.authOperator(r)
	secret := req.Name + "." + rand.Text()
	t := api.Token{Name: req.Name, Role: role, Created: time.Now().UTC(), CreatedBy: c.name}
	err = a.cfg.Tokens.CreateToken(r.Context(), store.StoredToken{Token: t, Hash: tokenHash(secret)})
	switch {
	case errors.Is(err, store.ErrExists):
		a.fail(w, r, http.StatusConflict, "token %s exists (revoke it first)", req.Name)
	case err != nil:
		a.fail(w, r, http.StatusInternalServerError, "creating token %s: %v", req.Name, err)
	default:
		writeJSON(w, http.StatusOK, api.TokenCreated{Token: t, Secret: secret})
	}
}

func (a *apiServer) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := a.cfg.Tokens.Tokens(r.Context())
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "listing tokens: %v", err)
		return
	}
	out := make([]api.Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Token)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *apiServer) revokeToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := a.cfg.Tokens.DeleteToken(r.Context(), name)
	switch {
	case store.IsNotFound(err):
		a.fail(w, r, http.StatusNotFound, "token %q not found", name)
	case err != nil:
		a.fail(w, r, http.StatusInternalServerError, "revoking token %s: %v", name, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *apiServer) listAudit(w http.ResponseWriter, r *http.Request) {
	since, limit, ok := a.sinceLimit(w, r)
	if !ok {
		return
	}
	recs, err := a.cfg.Audit.Audit(r.Context(), since, limit)
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "reading the audit log: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, recs)
}
