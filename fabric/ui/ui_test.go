package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

type fleet struct {
	mu      sync.Mutex
	nodes   []api.Node
	revoked bool
}

func (f *fleet) list(context.Context) ([]api.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.Node(nil), f.nodes...), nil
}

func (f *fleet) check(_ context.Context, t string) (string, api.Role, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case t == "good-token" && !f.revoked:
		return "alice", api.RoleOperator, true
	case t == "viewer-token":
		return "bob", api.RoleViewer, true
	}
	return "", "", false
}

// rig is the dashboard in front of an API that answers with the
// Authorization it was given (and counts the writes that reached it).
type rig struct {
	srv    *httptest.Server
	fleet  *fleet
	mu     sync.Mutex
	writes int
}

func newRig(t *testing.T, key string) *rig {
	t.Helper()
	rg := &rig{fleet: &fleet{nodes: []api.Node{{ID: "n-1", Phase: api.PhaseRegistered, MAC: "52:54:00:00:00:01", Rack: "r1", Slot: "1"}}}}
	apiH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			rg.mu.Lock()
			rg.writes++
			rg.mu.Unlock()
		}
		if r.Header.Get(CSRFHeader) != "" {
			t.Errorf("the CSRF token was passed on to the API")
		}
		writeJSON(w, http.StatusOK, map[string]string{"auth": r.Header.Get("Authorization")})
	})
	h, err := New(Config{Key: []byte(key), Check: rg.fleet.check, Nodes: rg.fleet.list, Tick: 20 * time.Millisecond}, apiH)
	if err != nil {
		t.Fatal(err)
	}
	rg.srv = httptest.NewTLSServer(h)
	t.Cleanup(rg.srv.Close)
	return rg
}

// browser is a client with a cookie jar, as a page is.
func (rg *rig) browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := *rg.srv.Client() // its own: the server's client is one shared value
	c.Jar = jar
	return &c
}

func do(t *testing.T, c *http.Client, method, url, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func login(t *testing.T, rg *rig, c *http.Client, token string) Session {
	t.Helper()
	code, body := do(t, c, "POST", rg.srv.URL+"/ui/login", `{"token":"`+token+`"}`, nil)
	if code != 200 {
		t.Fatalf("login: %d %s", code, body)
	}
	var s Session
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoginAndCSRF(t *testing.T) {
	rg := newRig(t, strings.Repeat("k", 32))
	c := rg.browser(t)
	u := rg.srv.URL

	// The page and its files, with headers that keep it its own.
	resp, err := c.Get(u + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Request.URL.Path != "/ui/" || !strings.Contains(string(page), "app.js") {
		t.Fatalf("/ led to %s: %.200s", resp.Request.URL, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP = %q", csp)
	}
	for _, f := range []string{"app.js", "app.css", "loom.svg"} {
		if code, _ := do(t, c, "GET", u+"/ui/"+f, "", nil); code != 200 {
			t.Errorf("/ui/%s: %d", f, code)
		}
	}

	// Not logged in: no session, the API gets no token.
	if code, _ := do(t, c, "GET", u+"/ui/session", "", nil); code != 401 {
		t.Errorf("session before login: %d", code)
	}
	if _, body := do(t, c, "GET", u+"/v1/nodes", "", nil); !strings.Contains(body, `"auth": ""`) && !strings.Contains(body, `"auth":""`) {
		t.Errorf("API call without a session carried %s", body)
	}

	// A wrong token, a form post, another site's login: refused, no cookie.
	if code, body := do(t, c, "POST", u+"/ui/login", `{"token":"nope"}`, nil); code != 401 || !strings.Contains(body, "wrong or revoked") {
		t.Errorf("wrong token: %d %s", code, body)
	}
	if code, _ := do(t, c, "POST", u+"/ui/login", "", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}); code != 415 {
		t.Errorf("form login: %d, want 415", code)
	}
	if code, _ := do(t, c, "POST", u+"/ui/login", `{"token":"good-token"}`, map[string]string{"Origin": "https://evil.example"}); code != 403 {
		t.Errorf("cross-site login: %d, want 403", code)
	}
	if code, _ := do(t, c, "GET", u+"/ui/session", "", nil); code != 401 {
		t.Fatalf("a refused login left a session: %d", code)
	}

	s := login(t, rg, c, "good-token")
	if s.Name != "alice" || s.Role != api.RoleOperator || s.CSRF == "" {
		t.Fatalf("session = %+v", s)
	}
	// Reads go as the session's token.
	if _, body := do(t, c, "GET", u+"/v1/nodes", "", nil); !strings.Contains(body, "Bearer good-token") {
		t.Errorf("read with a session: %s", body)
	}
	// Writes need the CSRF token: none, a forged one, another session's,
	// or from another site → 403 and the API never sees them.
	other := login(t, rg, rg.browser(t), "good-token")
	for name, hdr := range map[string]map[string]string{
		"none":          nil,
		"forged":        {CSRFHeader: "AAAA" + s.CSRF[4:]},
		"other session": {CSRFHeader: other.CSRF},
		"other site":    {CSRFHeader: s.CSRF, "Origin": "https://evil.example"},
		"cross-site":    {CSRFHeader: s.CSRF, "Sec-Fetch-Site": "cross-site"},
	} {
		if code, body := do(t, c, "POST", u+"/v1/nodes/n-1/reprovision", "{}", hdr); code != 403 || !strings.Contains(body, "CSRF") {
			t.Errorf("write with CSRF %s: %d %s", name, code, body)
		}
	}
	if rg.writes != 0 {
		t.Fatalf("%d refused writes reached the API", rg.writes)
	}
	if code, body := do(t, c, "POST", u+"/v1/nodes/n-1/reprovision", "{}", map[string]string{CSRFHeader: s.CSRF, "Origin": u}); code != 200 || !strings.Contains(body, "Bearer good-token") {
		t.Errorf("write with the CSRF token: %d %s", code, body)
	}
	// A caller's own token wins over the cookie (no CSRF needed: another
	// site cannot set it).
	if _, body := do(t, c, "POST", u+"/v1/x", "{}", map[string]string{"Authorization": "Bearer mine"}); !strings.Contains(body, "Bearer mine") {
		t.Errorf("own Authorization: %s", body)
	}

	// Revoking the token ends its sessions.
	rg.fleet.mu.Lock()
	rg.fleet.revoked = true
	rg.fleet.mu.Unlock()
	if code, _ := do(t, c, "GET", u+"/ui/session", "", nil); code != 401 {
		t.Errorf("session of a revoked token: %d", code)
	}
	// Logout clears the cookie.
	rg.fleet.mu.Lock()
	rg.fleet.revoked = false
	rg.fleet.mu.Unlock()
	if code, _ := do(t, c, "POST", u+"/ui/logout", "", nil); code != 403 {
		t.Errorf("logout without CSRF: %d", code)
	}
	if code, _ := do(t, c, "POST", u+"/ui/logout", "", map[string]string{CSRFHeader: s.CSRF}); code != 204 {
		t.Errorf("logout: %d", code)
	}
	if code, _ := do(t, c, "GET", u+"/ui/session", "", nil); code != 401 {
		t.Errorf("session after logout: %d", code)
	}
}

// A cookie sealed with another key, or tampered with, is no session.
func TestCookieSealed(t *testing.T) {
	a := newRig(t, strings.Repeat("a", 32))
	b := newRig(t, strings.Repeat("b", 32))
	c := a.browser(t)
	login(t, a, c, "good-token")
	var v string
	for _, ck := range c.Jar.Cookies(mustURL(t, a.srv.URL)) {
		if ck.Name == CookieName {
			v = ck.Value
		}
	}
	if v == "" {
		t.Fatal("no session cookie")
	}
	for name, val := range map[string]string{"other key": v, "tampered": v[:len(v)-2] + "AA", "garbage": "%%%"} {
		srv := b.srv.URL
		if name != "other key" {
			srv = a.srv.URL
		}
		code, _ := do(t, a.srv.Client(), "GET", srv+"/ui/session", "", map[string]string{"Cookie": CookieName + "=" + val})
		if code != 401 {
			t.Errorf("%s cookie: %d, want 401", name, code)
		}
	}
	// The same key (another replica) takes it.
	same := newRig(t, strings.Repeat("a", 32))
	if code, body := do(t, same.srv.Client(), "GET", same.srv.URL+"/ui/session", "", map[string]string{"Cookie": CookieName + "=" + v}); code != 200 {
		t.Errorf("another replica's session: %d %s", code, body)
	}
	if _, err := New(Config{Key: []byte("short"), Check: a.fleet.check, Nodes: a.fleet.list}, http.NotFoundHandler()); err == nil {
		t.Error("a short key was taken")
	}
}

// The stream sends every tile, then the changes, then logout when the
// token is revoked.
func TestStream(t *testing.T) {
	rg := newRig(t, strings.Repeat("k", 32))
	c := rg.browser(t)
	if code, _ := do(t, c, "GET", rg.srv.URL+"/ui/stream", "", nil); code != 401 {
		t.Fatalf("stream without a session: %d", code)
	}
	login(t, rg, c, "good-token")
	resp, err := c.Get(rg.srv.URL + "/ui/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan [2]string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		var ev string
		for sc.Scan() {
			line := sc.Text()
			if e, ok := strings.CutPrefix(line, "event: "); ok {
				ev = e
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				events <- [2]string{ev, d}
			}
		}
		close(events)
	}()
	next := func() (string, string) {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("the stream ended")
			}
			return e[0], e[1]
		case <-time.After(5 * time.Second):
			t.Fatal("no event in 5 s")
		}
		return "", ""
	}
	if ev, data := next(); ev != "nodes" || !strings.Contains(data, `"id":"n-1"`) || !strings.Contains(data, `"rack":"r1"`) {
		t.Fatalf("first event %s %s", ev, data)
	}
	rg.fleet.mu.Lock()
	rg.fleet.nodes[0].Phase = api.PhaseImaging
	rg.fleet.nodes[0].Progress = &api.Progress{Bytes: 10, Total: 100}
	rg.fleet.nodes[0].LastSeen = time.Now() // not drawn: no change by itself
	rg.fleet.nodes = append(rg.fleet.nodes, api.Node{ID: "n-2", Phase: api.PhaseDiscovered, MAC: "52:54:00:00:00:02"})
	rg.fleet.mu.Unlock()
	ev, data := next()
	var ch Change
	if err := json.Unmarshal([]byte(data), &ch); ev != "change" || err != nil || len(ch.Set) != 2 || ch.Set[0].Bytes != 10 || ch.Set[0].Total != 100 || ch.Set[1].ID != "n-2" {
		t.Fatalf("change %s %s", ev, data)
	}
	rg.fleet.mu.Lock()
	rg.fleet.nodes = rg.fleet.nodes[1:]
	rg.fleet.mu.Unlock()
	if ev, data := next(); ev != "change" || !strings.Contains(data, `"gone":["n-1"]`) {
		t.Fatalf("removal %s %s", ev, data)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestDiff(t *testing.T) {
	a := map[string]Tile{"x": {ID: "x", Phase: api.PhaseReady}, "y": {ID: "y"}}
	b := map[string]Tile{"x": {ID: "x", Phase: api.PhaseReady}, "z": {ID: "z"}}
	c := Diff(a, b)
	if len(c.Set) != 1 || c.Set[0].ID != "z" || len(c.Gone) != 1 || c.Gone[0] != "y" {
		t.Fatalf("Diff = %+v", c)
	}
	if c := Diff(b, b); len(c.Set)+len(c.Gone) != 0 {
		t.Fatalf("no change gave %+v", c)
	}
	long := TileOf(api.Node{ID: "n", Phase: api.PhaseFailed, Reason: strings.Repeat("x", 500), Progress: &api.Progress{Bytes: 1, Total: 2}})
	if len(long.Reason) > 210 || long.Total != 0 {
		t.Fatalf("tile of a failed node: %+v", long)
	}
}
