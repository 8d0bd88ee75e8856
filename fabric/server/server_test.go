package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
	"github.com/loomfabric/loom/fabric/store"
)

const (
	opToken     = "operator-token"
	enrollToken = "enroll-token"
)

// newAPI serves the API over a registry on a real embedded etcd.
func newAPI(t *testing.T) (*httptest.Server, *store.Store) { return newAPIWith(t, nil) }

// newAPIWith is newAPI with more of the configuration set by more.
func newAPIWith(t *testing.T, more func(*Config, *node.Registry)) (*httptest.Server, *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := node.New(node.Config{CA: testCA, Store: st, HeartbeatInterval: time.Second}, nil)
	cfg := Config{Registry: reg, OperatorToken: opToken, EnrollToken: enrollToken, ClientCAs: testCA.Pool()}
	if more != nil {
		more(&cfg, reg)
	}
	return serve(t, New(cfg, nil)), st
}

func call(t *testing.T, srv *httptest.Server, method, path, token, body string, out any) int {
	t.Helper()
	hc, token := clientFor(t, srv, token)
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(withCSR(path, body)))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, resp.Header.Get("Content-Type"))
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decoding: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

const regBody = `{"mac":"52:54:00:AA:00:01","ip":"10.0.0.100","inventory":{"cpu":{"model":"x","count":4},"memoryBytes":1073741824,
 "dmi":{"uuid":"4CAE4D26-B1C8-4450-B8EF-3D290B8D4695"},"nics":[{"name":"eth0","mac":"52:54:00:aa:00:01","link":true},{"name":"eth1","mac":"52:54:00:aa:00:02"}],
 "disks":[{"name":"vda","sizeBytes":8589934592}]}}`

func TestRejections(t *testing.T) {
	srv, _ := newAPI(t)
	for _, tc := range []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"register without token", "POST", "/v1/nodes/register", "", regBody, 401},
		{"register with operator token", "POST", "/v1/nodes/register", opToken, regBody, 401},
		{"register truncated JSON", "POST", "/v1/nodes/register", enrollToken, regBody[:40], 400},
		{"register trailing garbage", "POST", "/v1/nodes/register", enrollToken, regBody + "{}", 400},
		{"register wrong types", "POST", "/v1/nodes/register", enrollToken, `{"mac":1}`, 400},
		{"register bad MAC", "POST", "/v1/nodes/register", enrollToken, `{"mac":"nope"}`, 400},
		{"register bad NIC MAC", "POST", "/v1/nodes/register", enrollToken, `{"mac":"52:54:00:00:00:01","inventory":{"nics":[{"mac":"x"}]}}`, 400},
		{"register unknown accelerator", "POST", "/v1/nodes/register", enrollToken, `{"mac":"52:54:00:00:00:01","mode":"host","accel":{"accel":"hvf","cpu":"host"}}`, 400},
		{"register accelerator without CPU", "POST", "/v1/nodes/register", enrollToken, `{"mac":"52:54:00:00:00:01","mode":"host","accel":{"accel":"kvm"}}`, 400},
		{"register accelerator reason too long", "POST", "/v1/nodes/register", enrollToken, `{"mac":"52:54:00:00:00:01","mode":"host","accel":{"accel":"tcg","cpu":"max","reason":"` + strings.Repeat("x", 5000) + `"}}`, 400},
		{"register oversized", "POST", "/v1/nodes/register", enrollToken, `{"mac":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`, 400},
		{"nodes without token", "GET", "/v1/nodes", "", "", 401},
		{"nodes with enroll token", "GET", "/v1/nodes", enrollToken, "", 401},
		{"unknown node", "GET", "/v1/nodes/n-nope", opToken, "", 404},
		{"status of unknown node", "POST", "/v1/nodes/n-nope/status", "whatever", "{}", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e api.Error
			if got := call(t, srv, tc.method, tc.path, tc.token, tc.body, &e); got != tc.want {
				t.Errorf("%s %s = %d (%q), want %d", tc.method, tc.path, got, e.Message, tc.want)
			}
			if e.Message == "" {
				t.Errorf("%s %s: error without a message", tc.method, tc.path)
			}
		})
	}
	var nodes []api.Node
	call(t, srv, "GET", "/v1/nodes", opToken, "", &nodes)
	if len(nodes) != 0 {
		t.Errorf("after only bad requests the store holds %d nodes, want 0", len(nodes))
	}
}

// TestRegisterAccel: a host says how it runs guests; the node shows it,
// and a bad one is refused naming the field.
func TestRegisterAccel(t *testing.T) {
	srv, _ := newAPI(t)
	host := strings.Replace(regBody, `"ip":`, `"mode":"host","accel":{"accel":"tcg","cpu":"max","reason":"kvm probe failed: -cpu host: MSR 0x10a"},"ip":`, 1)
	var r api.RegisterResponse
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, host, &r); code != 200 {
		t.Fatalf("register = %d", code)
	}
	var n api.Node
	call(t, srv, "GET", "/v1/nodes/"+r.NodeID, opToken, "", &n)
	want := &api.Accel{Accel: "tcg", CPU: "max", Reason: "kvm probe failed: -cpu host: MSR 0x10a"}
	if diff := cmp.Diff(want, n.Accel); diff != "" {
		t.Errorf("node accel (-want +got):\n%s", diff)
	}
	var e api.Error
	bad := strings.Replace(regBody, `"ip":`, `"mode":"host","accel":{"accel":"xen","cpu":"max"},"ip":`, 1)
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, bad, &e); code != 400 || !strings.Contains(e.Message, "accel.accel") {
		t.Errorf("register with accel xen = %d %q, want 400 naming accel.accel", code, e.Message)
	}
}

func TestRegisterHeartbeatAndIdempotence(t *testing.T) {
	srv, _ := newAPI(t)
	var r1 api.RegisterResponse
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, regBody, &r1); code != 200 {
		t.Fatalf("register = %d", code)
	}
	if r1.NodeID == "" || asNode(r1) == "" || r1.HeartbeatInterval != api.Duration(time.Second) {
		t.Fatalf("register answer = %+v", r1)
	}

	// Same machine again (same UUID, boot MAC now eth1): same node, new certificate.
	again := strings.Replace(regBody, `"mac":"52:54:00:AA:00:01","ip"`, `"mac":"52:54:00:aa:00:02","ip"`, 1)
	var r2 api.RegisterResponse
	call(t, srv, "POST", "/v1/nodes/register", enrollToken, again, &r2)
	if r2.NodeID != r1.NodeID {
		t.Errorf("re-registration made node %s, want the same node %s", r2.NodeID, r1.NodeID)
	}
	// Same MAC, placeholder UUID: still the same node.
	zero := strings.Replace(regBody, "4CAE4D26-B1C8-4450-B8EF-3D290B8D4695", "00000000-0000-0000-0000-000000000000", 1)
	var r3 api.RegisterResponse
	call(t, srv, "POST", "/v1/nodes/register", enrollToken, zero, &r3)
	if r3.NodeID != r1.NodeID {
		t.Errorf("registration by MAC made node %s, want %s", r3.NodeID, r1.NodeID)
	}
	// Another machine with the same placeholder UUID is a different node.
	other := strings.NewReplacer("52:54:00:AA:00:01", "52:54:00:bb:00:01", "52:54:00:aa:00:01", "52:54:00:bb:00:01", "52:54:00:aa:00:02", "52:54:00:bb:00:02").Replace(zero)
	var r4 api.RegisterResponse
	call(t, srv, "POST", "/v1/nodes/register", enrollToken, other, &r4)
	if r4.NodeID == r1.NodeID {
		t.Errorf("a different machine with a zero UUID was merged into %s", r1.NodeID)
	}

	// The old certificate was replaced (revoked); the new one works.
	if code := call(t, srv, "POST", "/v1/nodes/"+r1.NodeID+"/status", asNode(r1), `{}`, nil); code != 401 {
		t.Errorf("heartbeat with a superseded credential = %d, want 401", code)
	}
	if code := call(t, srv, "POST", "/v1/nodes/"+r1.NodeID+"/status", asNode(r3), `{"ip":"10.0.0.101"}`, nil); code != 200 {
		t.Errorf("heartbeat = %d, want 200", code)
	}
	if code := call(t, srv, "POST", "/v1/nodes/"+r4.NodeID+"/status", asNode(r3), `{}`, nil); code != 403 {
		t.Errorf("heartbeat with another node's certificate = %d, want 403", code)
	}

	var nodes []api.Node
	call(t, srv, "GET", "/v1/nodes", opToken, "", &nodes)
	if len(nodes) != 2 {
		t.Fatalf("GET /v1/nodes: %d nodes, want 2", len(nodes))
	}
	var n api.Node
	call(t, srv, "GET", "/v1/nodes/"+r1.NodeID, opToken, "", &n)
	got := struct {
		Phase api.Phase
		IP    string
		CPUs  int
		MACs  []string
	}{n.Phase, n.IP, n.Inventory.CPU.Count, []string{n.Inventory.NICs[0].MAC, n.Inventory.NICs[1].MAC}}
	want := struct {
		Phase api.Phase
		IP    string
		CPUs  int
		MACs  []string
	}{api.PhaseRegistered, "10.0.0.101", 4, []string{"52:54:00:aa:00:01", "52:54:00:aa:00:02"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("node %s (-want +got):\n%s", r1.NodeID, diff)
	}
	if n.LastSeen.IsZero() {
		t.Errorf("node %s has no LastSeen after a heartbeat", n.ID)
	}
}

// fakeRegistry answers without a store, for fuzzing the HTTP layer.
type fakeRegistry struct{}

func (fakeRegistry) Register(_ context.Context, reg api.Registration) (api.Node, string, error) {
	return api.Node{ID: "n-1", MAC: reg.MAC}, "cred", nil
}
func (fakeRegistry) Authenticate(context.Context, string, string) error { return node.ErrUnauthorized }
func (fakeRegistry) Report(context.Context, string, api.Status) error   { return nil }
func (fakeRegistry) Goal(context.Context, string) (api.Goal, error)     { return api.Goal{}, nil }
func (fakeRegistry) WaitGoal(context.Context, string, int64) error      { return nil }
func (fakeRegistry) Provision(context.Context, string, string) (api.Node, error) {
	return api.Node{}, nil
}
func (fakeRegistry) Reprovision(context.Context, string) (api.Node, error) { return api.Node{}, nil }
func (fakeRegistry) List(context.Context) ([]api.Node, error)              { return nil, nil }
func (fakeRegistry) Get(context.Context, string) (api.Node, error) {
	return api.Node{}, store.ErrNotFound
}
func (fakeRegistry) HeartbeatInterval() time.Duration { return time.Second }

// FuzzRegister: any body gets a 200 or a 4xx with a JSON message, never a
// panic or a 5xx.
func FuzzRegister(f *testing.F) {
	f.Add(regBody)
	f.Add(`{"mac":"52:54:00:00:00:01","inventory":{"nics":[{"mac":"52:54:00:00:00:01"}]}}`)
	f.Add(`{"mac":`)
	f.Add(`[]`)
	h := New(Config{Registry: fakeRegistry{}, OperatorToken: opToken, EnrollToken: enrollToken}, nil)
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/nodes/register", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+enrollToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("register(%q) = %d", body, rec.Code)
		}
		if rec.Code != 200 {
			var e api.Error
			if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Message == "" {
				t.Fatalf("register(%q) = %d without a JSON error message: %q", body, rec.Code, rec.Body.String())
			}
		}
	})
}

func TestLeases(t *testing.T) {
	st, err := store.Open(context.Background(), store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := node.New(node.Config{CA: testCA, Store: st, HeartbeatInterval: time.Second}, nil)
	srv := serve(t, New(Config{Registry: reg, OperatorToken: opToken, EnrollToken: enrollToken, Leases: st}, nil))
	t.Cleanup(srv.Close)
	exp := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	want := []api.Lease{{MAC: "52:54:00:00:00:01", IP: "10.80.0.100", Expires: exp, Relay: &api.LeaseRelay{GIAddr: "10.80.0.1", CircuitID: "br1"}}}
	if err := st.CommitLeases(context.Background(), want, nil); err != nil {
		t.Fatal(err)
	}
	var got []api.Lease
	if code := call(t, srv, "GET", "/v1/leases", opToken, "", &got); code != 200 {
		t.Fatalf("GET /v1/leases = %d", code)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("leases (-want +got):\n%s", diff)
	}
	if code := call(t, srv, "GET", "/v1/leases", enrollToken, "", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/leases with the enrollment token = %d, want 401", code)
	}
}
