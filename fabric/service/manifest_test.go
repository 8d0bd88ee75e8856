package service

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
)

const guestbook = `name: guestbook
roles:
  - name: web
    kind: web
    package: guestbook-web
    instances: 5
    memory: 128MiB
    settings: {queue: entries}
    health: {path: /healthz, interval: 5s, failures: 3}
    endpoint: {port: 80}
  - name: worker
    kind: worker
    package: guestbook-worker
    instances: 3
    vcpus: 2
`

func TestParse(t *testing.T) {
	s, err := Parse([]byte(guestbook))
	if err != nil {
		t.Fatal(err)
	}
	want := api.Service{Name: "guestbook", UpdateDomains: 5, Upgrade: api.UpgradeAuto, UpgradeTimeout: api.Duration(10 * time.Minute), Roles: []api.ServiceRole{
		{Name: "web", Kind: api.RoleWeb, Package: "guestbook-web", Instances: 5, VCPUs: 1, MemoryMB: 128,
			Settings: map[string]string{"queue": "entries"}, Health: &api.HealthProbe{Path: "/healthz", Interval: api.Duration(5 * time.Second), Timeout: api.Duration(api.DefaultProbeTimeout), Failures: 3},
			Endpoint: &api.Endpoint{Port: 80, Protocol: "http"}},
		{Name: "worker", Kind: api.RoleWorker, Package: "guestbook-worker", Instances: 3, VCPUs: 2, MemoryMB: api.DefaultMemoryMB},
	}}
	if d := cmp.Diff(want, s); d != "" {
		t.Fatalf("Parse (-want +got):\n%s", d)
	}
}

// TestSampleManifest: the guestbook that `make lab` deploys parses.
func TestSampleManifest(t *testing.T) {
	b, err := os.ReadFile("../../images/services/guestbook/guestbook.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Roles) != 2 || s.Roles[0].Instances != 5 || s.Roles[1].Instances != 3 || s.Roles[0].Endpoint == nil {
		t.Errorf("the sample: %+v", s)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // each problem, in order
	}{
		{"syntax", "name: [x\n", []string{"line 1"}},
		{"unknown field", "name: a\nreplicas: 3\nroles: []\n", []string{`line 2: unknown field "replicas"`}},
		{"wrong type", "name: a\nroles:\n  - name: w\n    instances: many\n", []string{"line 4"}},
		{"no roles", "name: a\n", []string{"roles: a service needs at least one role"}},
		{"bad timeouts", "name: a\nupgradeTimeout: soon\nroles:\n  - {name: w, kind: worker, package: p, instances: 1}\n", []string{`line 2, upgradeTimeout: "soon": want a duration`}},
		{"timeout too long", "name: a\nupgradeTimeout: 48h\nroles:\n  - {name: w, kind: worker, package: p, instances: 1}\n", []string{"line 2, upgradeTimeout: 48h0m0s: want 1s to 24h"}},
		{"bad name and domains", "name: Big_Name\nupdateDomains: 0\nupgrade: sometimes\nroles:\n  - {name: w, kind: worker, package: p, instances: 1}\n",
			[]string{`line 1, name: "Big_Name"`, "line 2, updateDomains: 0: want 1 to 20", `line 3, upgrade: "sometimes": want auto or manual`}},
		{"role problems", `name: a
roles:
  - name: web
    kind: web
    package: p
    instances: -1
    vcpus: 100
    memory: 1.5KiB
  - name: web
    kind: cron
    instances: 2
    endpoint: {port: 70000, protocol: udp}
`, []string{
			"line 3, roles[0].endpoint: required for a web role",
			"line 6, roles[0].instances: -1: want 0 to 1000",
			"line 7, roles[0].vcpus: 100: want 1 to 64",
			`line 8, roles[0].memory: size "1.5KiB"`,
			`line 9, roles[1].name: "web": a second role of that name`,
			"line 9, roles[1].package: required",
			`line 10, roles[1].kind: "cron": want web or worker`,
			"line 12, roles[1].endpoint.port: 70000: want 1 to 65535",
			`line 12, roles[1].endpoint.protocol: "udp": want http or tcp`,
		}},
		{"worker with endpoint, missing count", "name: a\nroles:\n  - name: w\n    kind: worker\n    package: p\n    endpoint: {port: 80}\n",
			[]string{"line 3, roles[0].instances: required", "line 6, roles[0].endpoint: a worker role has no endpoint"}},
		{"bad setting key", "name: a\nroles:\n  - name: w\n    kind: worker\n    package: p\n    instances: 1\n    settings: {\"1bad\": x}\n",
			[]string{`line 7, roles[0].settings: key "1bad"`}},
		{"bad health probe", "name: a\nroles:\n  - name: w\n    kind: worker\n    package: p\n    instances: 1\n    health:\n      path: healthz\n      interval: often\n      timeout: 1h\n      failures: 0\n",
			[]string{`line 8, roles[0].health.path: "healthz": want an HTTP path`, `line 9, roles[0].health.interval: "often": want a duration`, "line 10, roles[0].health.timeout: 1h0m0s: want 100ms to 5m0s"}},
		{"too big", strings.Repeat("#", MaxManifest+1), []string{"a manifest is at most"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Parse: %v, want Problems", err)
			}
			got := ps.Error()
			for _, w := range tc.want {
				i := strings.Index(got, w)
				if i < 0 {
					t.Fatalf("%q missing (or out of order) in:\n%s", w, ps.Error())
				}
				got = got[i+len(w):]
			}
			if len(ps) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(ps), len(tc.want), ps.Error())
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(guestbook))
	f.Add([]byte("name: a\nroles: [{name: w, kind: worker, package: p, instances: 1}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err == nil && (s.Name == "" || len(s.Roles) == 0) {
			t.Fatalf("accepted a service without name or roles: %+v", s)
		}
	})
}
