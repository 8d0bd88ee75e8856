package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
	"github.com/loomfabric/loom/fabric/store"
)

// TestTokensRolesAndAudit: named tokens with roles, stored hashed; a
// viewer cannot write, an operator cannot manage tokens, a revoked token
// is refused at once; every write is in the audit log with who made it
// and how it ended.
func TestTokensRolesAndAudit(t *testing.T) {
	st, err := store.Open(context.Background(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := node.New(node.Config{CA: testCA, Store: st, HeartbeatInterval: time.Second}, nil)
	srv := serve(t, New(Config{Registry: reg, OperatorToken: opToken, EnrollToken: enrollToken, Tokens: st, Audit: st}, nil))
	t.Cleanup(srv.Close)

	var viewer, op api.TokenCreated
	if code := call(t, srv, "POST", "/v1/tokens", opToken, `{"name":"v","role":"viewer"}`, &viewer); code != 200 || viewer.Secret == "" {
		t.Fatalf("create viewer: %d %+v", code, viewer)
	}
	if code := call(t, srv, "POST", "/v1/tokens", opToken, `{"name":"o","role":"operator"}`, &op); code != 200 {
		t.Fatalf("create operator: %d", code)
	}
	for _, c := range []struct {
		name, body string
		want       int
	}{
		{"bad role", `{"name":"x","role":"root"}`, 400},
		{"dot in the name", `{"name":"a.b","role":"viewer"}`, 400},
		{"empty name", `{"name":"","role":"viewer"}`, 400},
		{"the bootstrap name", `{"name":"operator","role":"viewer"}`, 400},
		{"taken", `{"name":"v","role":"admin"}`, 409},
		{"not JSON", `{`, 400},
	} {
		var e api.Error
		if code := call(t, srv, "POST", "/v1/tokens", opToken, c.body, &e); code != c.want || e.Message == "" {
			t.Errorf("create with %s: %d %q, want %d and a message", c.name, code, e.Message, c.want)
		}
	}

	// Stored hashed: the secret is nowhere in the store.
	r, err := st.Client().Get(context.Background(), "/loom/v1/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range r.Kvs {
		if strings.Contains(string(kv.Value), viewer.Secret) || strings.Contains(string(kv.Value), op.Secret) {
			t.Errorf("a token's secret is stored in %s", kv.Key)
		}
	}

	for _, c := range []struct {
		who, token, method, path string
		want                     int
	}{
		{"viewer", viewer.Secret, "GET", "/v1/nodes", 200},
		{"viewer", viewer.Secret, "POST", "/v1/nodes/n-none/provision", 403},
		{"viewer", viewer.Secret, "GET", "/v1/tokens", 403},
		{"viewer", viewer.Secret, "GET", "/v1/audit", 403},
		{"operator", op.Secret, "POST", "/v1/nodes/n-none/provision", 404}, // past the role check
		{"operator", op.Secret, "POST", "/v1/tokens", 403},
		{"operator", op.Secret, "GET", "/v1/nodes", 200},
		{"none", "", "GET", "/v1/nodes", 401},
		{"wrong secret", "v.notthesecret", "GET", "/v1/nodes", 401},
		{"no name", "justatoken", "GET", "/v1/nodes", 401},
		{"unknown name", "ghost." + strings.Split(viewer.Secret, ".")[1], "GET", "/v1/nodes", 401},
		{"enrollment token", enrollToken, "GET", "/v1/nodes", 401},
	} {
		body := ""
		if c.method == "POST" {
			body = `{"profile":"p","name":"x","role":"viewer"}`
		}
		var out any
		if code := call(t, srv, c.method, c.path, c.token, body, &out); code != c.want {
			t.Errorf("%s: %s %s = %d, want %d", c.who, c.method, c.path, code, c.want)
		}
	}

	// Revoked: refused from the next request on.
	req, _ := http.NewRequest("DELETE", srv.URL+"/v1/tokens/o", nil)
	req.Header.Set("Authorization", "Bearer "+opToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	var e api.Error
	if code := call(t, srv, "GET", "/v1/nodes", op.Secret, "", &e); code != 401 {
		t.Errorf("a revoked token: %d, want 401", code)
	}
	if code := call(t, srv, "DELETE", "/v1/tokens/o", opToken, "", &e); code != 404 {
		t.Errorf("revoking a missing token: %d, want 404", code)
	}
	var ts []api.Token
	if code := call(t, srv, "GET", "/v1/tokens", opToken, "", &ts); code != 200 || len(ts) != 1 || ts[0].Name != "v" || ts[0].Role != api.RoleViewer || ts[0].CreatedBy != BootstrapName {
		t.Errorf("tokens after the revocation: %d %+v", code, ts)
	}

	// The audit log has every write, failed ones too, and no read.
	var recs []api.AuditRecord
	if code := call(t, srv, "GET", "/v1/audit", opToken, "", &recs); code != 200 {
		t.Fatalf("audit: %d", code)
	}
	type key struct {
		who, what string
		status    int
	}
	got := map[key]bool{}
	for _, r := range recs {
		got[key{r.Who, r.Method + " " + r.Path, r.Status}] = true
		if r.Method == "GET" {
			t.Errorf("a read was audited: %+v", r)
		}
		if r.Time.IsZero() || r.From == "" {
			t.Errorf("audit record without time or origin: %+v", r)
		}
	}
	for _, k := range []key{
		{"operator", "POST /v1/tokens", 200},
		{"operator", "POST /v1/tokens", 409},
		{"v", "POST /v1/nodes/n-none/provision", 403},
		{"o", "POST /v1/nodes/n-none/provision", 404},
		{"o", "POST /v1/tokens", 403},
		{"operator", "DELETE /v1/tokens/o", 204},
	} {
		if !got[k] {
			t.Errorf("audit log lacks %+v; it has %+v", k, recs)
		}
	}
	// A registration is recorded as the enrollment token's.
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, regBody, nil); code != 200 {
		t.Fatalf("register: %d", code)
	}
	recs = nil
	if code := call(t, srv, "GET", "/v1/audit?since="+time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)+"&limit=100", opToken, "", &recs); code != 200 {
		t.Fatalf("audit since: %d", code)
	}
	if last := recs[len(recs)-1]; last.Who != "enroll" || last.Path != "/v1/nodes/register" || last.Status != 200 {
		t.Errorf("last audit record = %+v, want the registration", last)
	}
	if code := call(t, srv, "GET", "/v1/audit?limit=0", opToken, "", &e); code != http.StatusBadRequest {
		t.Errorf("audit?limit=0: %d, want 400", code)
	}
}
