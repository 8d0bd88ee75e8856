// Package ui is loomd's web dashboard: files embedded in the binary (plain
// HTML, CSS and JavaScript that call the JSON API), a cookie session made
// from an operator token, and a stream of the fleet's nodes for the racks
// grid.
//
// The session is sealed in the cookie itself (AES-GCM under a key every
// replica shares), so any replica serves it and a restart keeps it. What
// it holds is the operator token, never shown to the page's script
// (HttpOnly): each API call the page makes is let through as that
// token's, so roles, the audit log, forwarding to the leader and token
// revocation (which ends the token's sessions at once) work as for any
// client. A write also needs the session's CSRF token in X-CSRF-Token.
package ui

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

//go:embed static
var static embed.FS

// CookieName is the session cookie (the __Host- prefix: secure, this
// host only, every path).
const CookieName = "__Host-loom-session"

// CSRFHeader carries the session's CSRF token on writes.
const CSRFHeader = "X-CSRF-Token"

// Config wires the dashboard.
type Config struct {
	// Key seals the session cookies and signs the CSRF tokens: at least
	// 32 bytes, the same on every replica. Required.
	Key []byte
	// Check says whose operator token t is (server.CheckToken). Required.
	Check func(ctx context.Context, t string) (name string, role api.Role, ok bool)
	// Nodes lists the fleet for the live grid. Required.
	Nodes func(ctx context.Context) ([]api.Node, error)
	// SessionTTL bounds a session from its login (default 12 h).
	SessionTTL time.Duration
	// Tick is how often the live grid looks for changes (default 1 s).
	Tick time.Duration
	Log  *slog.Logger
}

// Session is what a logged-in page learns of itself (GET /ui/session).
type Session struct {
	Name    string    `json:"name"`
	Role    api.Role  `json:"role"`
	CSRF    string    `json:"csrf"`
	Expires time.Time `json:"expires"`
}

// sealed is the cookie's content.
type sealed struct {
	Token   string `json:"t"`
	Nonce   string `json:"n"` // the CSRF token's seed
	Expires int64  `json:"e"` // Unix seconds
}

type dash struct {
	cfg   Config
	api   http.Handler
	aead  cipher.AEAD
	csrf  []byte
	files http.Handler
}

// New returns loomd's handler with the dashboard in front of apiHandler:
// /ui/… is the dashboard's, / redirects to it, and calls to the rest with
// a session cookie (and no Authorization) go on with the session's token.
func New(cfg Config, apiHandler http.Handler) (http.Handler, error) {
	if len(cfg.Key) < 32 {
		return nil, errors.New("ui: the session key must have at least 32 bytes")
	}
	if cfg.Check == nil || cfg.Nodes == nil {
		return nil, errors.New("ui: Check and Nodes are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	block, err := aes.NewCipher(derive(cfg.Key, "session cookie"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	_ = mime.AddExtensionType(".js", "text/javascript; charset=utf-8")
	d := &dash{cfg: cfg, api: apiHandler, aead: aead, csrf: derive(cfg.Key, "csrf"),
		files: http.StripPrefix("/ui/", http.FileServerFS(sub))}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/", d.file)
	mux.HandleFunc("POST /ui/login", d.login)
	mux.HandleFunc("POST /ui/logout", d.logout)
	mux.HandleFunc("GET /ui/session", d.session)
	mux.HandleFunc("GET /ui/stream", d.stream)
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusMethodNotAllowed, "%s %s: not a dashboard route", r.Method, r.URL.Path)
	})
	mux.Handle("/", http.HandlerFunc(d.passOn))
	return mux, nil
}

// derive is a key of its own for one use of the shared key.
func derive(key []byte, use string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("loom ui: " + use))
	return m.Sum(nil)
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, api.Error{Message: fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the status is sent; a client gone mid-body is not ours to report
}

// file serves the embedded files, with headers that keep the page its own.
func (d *dash) file(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	d.files.ServeHTTP(w, r)
}

func (d *dash) seal(s sealed) (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, d.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(d.aead.Seal(nonce, nonce, b, []byte(CookieName))), nil
}

// open reads r's session cookie: false if there is none, it was not
// sealed with this key, or it has expired.
func (d *dash) open(r *http.Request) (sealed, bool) {
	var s sealed
	c, err := r.Cookie(CookieName)
	if err != nil {
		return s, false
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	n := d.aead.NonceSize()
	if err != nil || len(b) < n {
		return s, false
	}
	plain, err := d.aead.Open(nil, b[:n], b[n:], []byte(CookieName))
	if err != nil || json.Unmarshal(plain, &s) != nil || s.Token == "" {
		return s, false
	}
	if time.Now().Unix() >= s.Expires {
		return s, false
	}
	return s, true
}

func (d *dash) csrfToken(s sealed) string {
	m := hmac.New(sha256.New, d.csrf)
	m.Write([]byte(s.Nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (d *dash) csrfOK(r *http.Request, s sealed) bool {
	got := r.Header.Get(CSRFHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(d.csrfToken(s))) == 1
}

// sameOrigin refuses a request a browser says came from another site.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true // not a browser's cross-site request (they send Origin on POST)
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

// login turns an operator token into a session cookie.
func (d *dash) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		fail(w, http.StatusForbidden, "login from another site refused")
		return
	}
	// JSON only: a form on another site cannot post it without asking.
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		fail(w, http.StatusUnsupportedMediaType, "login: want a JSON body {\"token\": \"…\"}")
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
		fail(w, http.StatusBadRequest, "login: decoding body: %v", err)
		return
	}
	tok := strings.TrimSpace(body.Token)
	name, role, ok := d.cfg.Check(r.Context(), tok)
	if !ok {
		d.cfg.Log.Info("ui: login refused", "from", r.RemoteAddr)
		fail(w, http.StatusUnauthorized, "that operator token is wrong or revoked")
		return
	}
	seed := make([]byte, 16)
	if _, err := rand.Read(seed); err != nil {
		fail(w, http.StatusInternalServerError, "login: %v", err)
		return
	}
	exp := time.Now().Add(d.cfg.SessionTTL).Truncate(time.Second)
	s := sealed{Token: tok, Nonce: base64.RawURLEncoding.EncodeToString(seed), Expires: exp.Unix()}
	v, err := d.seal(s)
	if err != nil {
		fail(w, http.StatusInternalServerError, "login: %v", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: v, Path: "/", Expires: exp, MaxAge: int(d.cfg.SessionTTL / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	d.cfg.Log.Info("ui: login", "who", name, "role", role, "from", r.RemoteAddr)
	writeJSON(w, http.StatusOK, Session{Name: name, Role: role, CSRF: d.csrfToken(s), Expires: exp.UTC()})
}

func (d *dash) logout(w http.ResponseWriter, r *http.Request) {
	s, ok := d.open(r)
	if ok && !d.csrfOK(r, s) {
		fail(w, http.StatusForbidden, "CSRF token missing or wrong")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// current is the request's session if its token still stands.
func (d *dash) current(r *http.Request) (sealed, string, api.Role, bool) {
	s, ok := d.open(r)
	if !ok {
		return s, "", "", false
	}
	name, role, ok := d.cfg.Check(r.Context(), s.Token)
	return s, name, role, ok
}

func (d *dash) session(w http.ResponseWriter, r *http.Request) {
	s, name, role, ok := d.current(r)
	if !ok {
		fail(w, http.StatusUnauthorized, "not logged in (or the session's token was revoked, or it expired)")
		return
	}
	writeJSON(w, http.StatusOK, Session{Name: name, Role: role, CSRF: d.csrfToken(s), Expires: time.Unix(s.Expires, 0).UTC()})
}

// passOn hands a request to the API; one with a session cookie and no
// Authorization of its own goes as the session's token, a write only
// with the session's CSRF token and from this site.
func (d *dash) passOn(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		d.api.ServeHTTP(w, r)
		return
	}
	s, ok := d.open(r)
	if !ok {
		d.api.ServeHTTP(w, r)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if !d.csrfOK(r, s) || !sameOrigin(r) {
			d.cfg.Log.Info("ui: write refused: CSRF", "method", r.Method, "path", r.URL.Path, "from", r.RemoteAddr)
			fail(w, http.StatusForbidden, "CSRF token missing or wrong: reload the dashboard")
			return
		}
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+s.Token)
	r.Header.Del(CSRFHeader)
	d.api.ServeHTTP(w, r)
}
