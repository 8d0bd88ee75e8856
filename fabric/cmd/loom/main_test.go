package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/loomd"
)

// fabric is an in-process loomd (embedded etcd, API on a unix socket)
// with two registered nodes: a maintenance node and a Ready host.
type fabric struct {
	env         map[string]string
	dir         string
	maint, host string // node IDs
	vm          string // made by the test's vm create
}

func startFabric(t *testing.T) *fabric {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	cfg := &loomd.Config{DataDir: filepath.Join(dir, "data"), API: "127.0.0.1:0", APIUnix: sock}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cfg.Start(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("loomd: %v", err)
		}
	})
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(cfg.DataDir, name))
		return strings.TrimSpace(string(b))
	}
	c := &client.Client{BaseURL: "unix://" + sock}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c.Token = read(loomd.OperatorTokenFile); c.Token != "" {
			if _, err := c.Nodes(ctx); err == nil {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("loomd ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("loomd's API did not answer in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	tokenFile := filepath.Join(dir, "operator.token")
	if err := os.WriteFile(tokenFile, []byte(c.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agent := &client.Client{BaseURL: c.BaseURL, Token: read(loomd.EnrollTokenFile)}
	register := func(mode api.Mode, mac string) string {
		r, _, err := agent.Enroll(ctx, api.Registration{Mode: mode, MAC: mac, IP: "10.0.0.9", AgentVersion: "test",
			Accel: map[bool]*api.Accel{true: {Accel: "tcg", CPU: "max"}}[mode == api.ModeHost],
			Inventory: api.Inventory{
				CPU: api.CPU{Model: "x", Count: 4}, Memory: 1 << 30,
				NICs:  []api.NIC{{Name: "eth0", MAC: mac, Link: true}},
				Disks: []api.Disk{{Name: "vda", SizeBytes: 8 << 30}},
			}})
		if err != nil {
			t.Fatalf("register %s: %v", mac, err)
		}
		return r.NodeID
	}
	f := &fabric{dir: dir, env: map[string]string{"LOOM_ADDR": c.BaseURL}}
	f.maint = register(api.ModeMaintenance, "52:54:00:aa:00:01")
	f.host = register(api.ModeHost, "52:54:00:aa:00:02")
	f.env["TOKEN_FILE"] = tokenFile
	return f
}

// loom runs one command line; {maint}, {host} and {dir} in an argument
// are the fabric's node IDs and temporary directory.
func (f *fabric) loom(t *testing.T, stdin string, argv ...string) (string, string, error) {
	t.Helper()
	r := strings.NewReplacer("{maint}", f.maint, "{host}", f.host, "{dir}", f.dir, "{vm}", f.vm)
	args := []string{"--token-file", f.env["TOKEN_FILE"]}
	for _, a := range argv {
		args = append(args, r.Replace(a))
	}
	var out, errb bytes.Buffer
	err := run(t.Context(), args, func(k string) string { return f.env[k] }, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func TestCLI(t *testing.T) {
	f := startFabric(t)
	if err := os.WriteFile(filepath.Join(f.dir, "host.img"), bytes.Repeat([]byte("loom"), 1<<18), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "Other.v2.img"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "bad.csv"), []byte("mac,rack,slot\n52:54:00:bb:00:01,r1,1\nnot-a-mac,r1,2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "good.csv"), []byte("rack,slot,mac\nr1,1,52:54:00:bb:00:01\nr1,2,52:54:00:bb:00:02\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		args    []string
		stdin   string
		want    []string // in stdout
		notWant []string // nowhere in stdout
		wantErr string   // "" for success
		check   func(t *testing.T, out string)
	}{
		// Global flags and argument checks.
		{name: "unknown command", args: []string{"bogus"}, wantErr: `unknown command "bogus"`},
		{name: "bad output format", args: []string{"nodes", "-o", "xml"}, wantErr: "-o xml: want table, json or yaml"},
		{name: "missing argument", args: []string{"node", "show"}, wantErr: "loom node show: want 1 argument, got 0; usage: loom node show ID"},
		{name: "extra argument", args: []string{"nodes", "x"}, wantErr: "want 0 arguments, got 1"},
		{name: "required flag", args: []string{"node", "provision", "{maint}"}, wantErr: `required flag(s) "profile" not set`},

		// Nodes.
		{name: "nodes table", args: []string{"nodes"}, want: []string{"ID", "PHASE", "LAST SEEN", "{maint}", "Registered", "{host}", "Ready"}},
		{name: "nodes json", args: []string{"nodes", "-o", "json"}, check: func(t *testing.T, out string) {
			var ns []api.Node
			if err := json.Unmarshal([]byte(out), &ns); err != nil || len(ns) != 2 {
				t.Fatalf("nodes -o json: %d nodes, %v:\n%s", len(ns), err, out)
			}
		}},
		{name: "nodes yaml", args: []string{"-o", "yaml", "nodes"}, want: []string{"- accel:", "mac: 52:54:00:aa:00:02"}, check: func(t *testing.T, out string) {
			var ns []api.Node
			if err := yaml.Unmarshal([]byte(out), &ns); err != nil || len(ns) != 2 || ns[0].Inventory.CPU.Count != 4 {
				t.Fatalf("nodes -o yaml: %+v, %v:\n%s", ns, err, out)
			}
		}},
		{name: "node show", args: []string{"node", "show", "{host}"}, want: []string{"ID:", "{host}", "Phase:", "Ready", "Guests run:", "tcg (cpu max)", "CPU:", "4 × x", "Memory:", "1.0 GiB", "Disk vda:", "8.0 GiB"}},
		{name: "node show text is table", args: []string{"node", "show", "{host}", "-o", "text"}, want: []string{"Phase:"}},
		{name: "node show json", args: []string{"node", "show", "{maint}", "-o", "json"}, want: []string{`"id": "{maint}"`, `"phase": "Registered"`}},
		{name: "node show missing", args: []string{"node", "show", "n-nosuch"}, wantErr: "not found"},
		{name: "leases without DHCP", args: []string{"leases"}, wantErr: "this loomd hands out no DHCP leases"},

		// Images and profiles.
		{name: "image add", args: []string{"image", "add", "{dir}/host.img", "--name", "host"}, want: []string{"image host: raw, 1.0 MiB logical"}},
		{name: "image add twice", args: []string{"image", "add", "{dir}/host.img"}, wantErr: "image host: already exists"},
		{name: "image add default name", args: []string{"image", "add", "{dir}/Other.v2.img"}, want: []string{"image other: raw"}},
		{name: "image add as web", args: []string{"image", "add", "--name", "web", "{dir}/host.img"}, want: []string{"image web:"}},
		{name: "image add missing file", args: []string{"image", "add", "{dir}/nosuch.img"}, wantErr: "no such file"},
		{name: "image list", args: []string{"image", "list"}, want: []string{"NAME", "DIGEST", "host", "raw", "1.0 MiB", "web"}},
		{name: "image show", args: []string{"image", "show", "host"}, want: []string{"Name:", "host", "Size:", "1.0 MiB logical, 1.0 MiB of data in 1 ranges", "Digest:"}},
		{name: "image show yaml", args: []string{"image", "show", "host", "-o", "yaml"}, want: []string{"digest:", "name: host", "ranges:", "- length: 1048576"}},
		{name: "profile set", args: []string{"profile", "set", "p1", "--image", "host"}, want: []string{"profile p1: image host, disk first:1GiB"}},
		{name: "profile set bad disk", args: []string{"profile", "set", "p2", "--image", "host", "--disk", "biggest"}, wantErr: "disk"},
		{name: "profile set missing image", args: []string{"profile", "set", "p2", "--image", "nosuch"}, wantErr: "nosuch"},
		{name: "profile list", args: []string{"profile", "list"}, want: []string{"NAME", "BOOT", "p1", "host", "first:1GiB", "kexec"}, notWant: []string{"p2"}},
		{name: "profile show", args: []string{"profile", "show", "p1"}, want: []string{"Image:", "host", "Boot:", "kexec"}},
		{name: "profile show missing", args: []string{"profile", "show", "p9"}, wantErr: `profile "p9" not found`},
		{name: "provision", args: []string{"node", "provision", "{maint}", "--profile", "p1"}, want: []string{"node {maint}: provisioning with profile p1 (generation 1)"}},
		{name: "provision json", args: []string{"node", "reprovision", "{maint}", "-o", "json"}, want: []string{`"profile": "p1"`, `"provision": 2`}},
		{name: "provision unknown profile", args: []string{"node", "provision", "{maint}", "--profile", "nosuch"}, wantErr: "nosuch"},
		{name: "image in use", args: []string{"image", "rm", "host"}, wantErr: "p1"},

		// VMs.
		{name: "vm create", args: []string{"vm", "create", "--package", "web", "--memory", "128", "--set", "greeting=hi, there", "--set", "k=a=b"}, check: func(t *testing.T, out string) {
			if id := strings.TrimSpace(out); !strings.HasPrefix(id, "vm-") || strings.Contains(id, "\n") {
				t.Fatalf("vm create printed %q, want only the VM's ID", out)
			}
			f.vm = strings.TrimSpace(out)
		}},
		{name: "vm create bad memory", args: []string{"vm", "create", "--package", "web", "--memory", "1.5KiB"}, wantErr: "--memory"},
		{name: "vm create bad setting", args: []string{"vm", "create", "--package", "web", "--set", "novalue"}, wantErr: `"novalue": want KEY=VALUE`},
		{name: "vm create no room", args: []string{"vm", "create", "--package", "web", "--memory", "4GiB"}, wantErr: "no capacity: no Ready node has 1 vCPUs and 4096 MiB free"},
		{name: "vm list", args: []string{"vm", "list"}, want: []string{"ID", "RESTARTS", "vm-", "{host}", "web", "128 MiB", "running"}},
		{name: "vm list json", args: []string{"vm", "list", "-o", "json"}, check: func(t *testing.T, out string) {
			var vs []api.VM
			if err := json.Unmarshal([]byte(out), &vs); err != nil || len(vs) != 1 {
				t.Fatalf("vm list -o json: %v, %v", vs, err)
			}
			if vs[0].Settings["greeting"] != "hi, there" || vs[0].Settings["k"] != "a=b" || vs[0].Node != f.host {
				t.Fatalf("vm: %+v", vs[0])
			}
		}},
		{name: "vm show missing", args: []string{"vm", "show", "vm-nosuch"}, wantErr: "not found"},
		{name: "vm stop missing", args: []string{"vm", "stop", "vm-nosuch"}, wantErr: "not found"},
		{name: "vm stop", args: []string{"vm", "stop", "{vm}"}, want: []string{"vm {vm}: stop requested (desired stopped"}},
		{name: "vm show", args: []string{"vm", "show", "{vm}"}, want: []string{"Desired:", "stopped", "Settings:", "greeting=hi, there", "k=a=b"}},

		// Credentials and racks.
		{name: "credential set from stdin", args: []string{"credential", "set", "bmc", "--username", "admin", "--password-file", "-"}, stdin: "s3cret\n", want: []string{"credential bmc (user admin) stored"}},
		{name: "credential set needs a password file", args: []string{"credential", "set", "bmc2", "--username", "admin"}, wantErr: `"password-file" not set`},
		{name: "credential list hides passwords", args: []string{"credential", "list", "-o", "json"}, want: []string{`"name": "bmc"`, `"username": "admin"`}, notWant: []string{"s3cret"}},
		// The control plane's replicas (one here).
		{name: "cluster status", args: []string{"cluster", "status"}, want: []string{"leader loomd", "NAME", "RAFT INDEX", "loomd", "leader", "healthy"}},
		{name: "cluster status json", args: []string{"cluster", "status", "-o", "json"}, want: []string{`"leader": "loomd"`, `"healthy": true`, `"raftIndex":`}},
		{name: "cluster add needs a peer URL", args: []string{"cluster", "add", "b"}, wantErr: `required flag(s) "peer-url" not set`},
		{name: "cluster add with a bad peer URL", args: []string{"cluster", "add", "b", "--peer-url", "b:2380"}, wantErr: `400 Bad Request: peer URL "b:2380": want http://HOST:PORT`},
		{name: "cluster add with a bad name", args: []string{"cluster", "add", "b/c", "--peer-url", "http://10.0.0.2:2380"}, wantErr: `replica name "b/c"`},
		{name: "cluster remove missing", args: []string{"cluster", "remove", "ghost"}, wantErr: "404 Not Found: member ghost: not found"},
		{name: "cluster remove itself", args: []string{"cluster", "remove", "loomd"}, wantErr: "409 Conflict: refused: replica loomd cannot remove its own member"},
		// Tokens and the audit log (the test's token is the data
		// directory's: an admin).
		{name: "token create", args: []string{"token", "create", "ci-viewer", "--role", "viewer"}, want: []string{"token ci-viewer (viewer); its secret, shown this once:", "ci-viewer."}},
		{name: "token create needs a role", args: []string{"token", "create", "x"}, wantErr: `required flag(s) "role" not set`},
		{name: "token create with a bad role", args: []string{"token", "create", "x", "--role", "root"}, wantErr: `--role: role "root": want viewer, operator or admin`},
		{name: "token create twice", args: []string{"token", "create", "ci-viewer", "--role", "admin"}, wantErr: "409 Conflict: token ci-viewer exists (revoke it first)"},
		{name: "token list", args: []string{"token", "list"}, want: []string{"NAME", "ROLE", "ci-viewer", "viewer", "operator"}},
		{name: "token list json has no secret", args: []string{"token", "list", "-o", "json"}, want: []string{`"name": "ci-viewer"`}, notWant: []string{"secret", "hash"}},
		{name: "token revoke", args: []string{"token", "revoke", "ci-viewer"}, want: []string{"token ci-viewer revoked"}},
		{name: "token revoke missing", args: []string{"token", "revoke", "ci-viewer"}, wantErr: `404 Not Found: token "ci-viewer" not found`},
		{name: "audit", args: []string{"audit", "--since", "1h"}, want: []string{"WHO", "operator", "POST /v1/tokens", "200", "409", "DELETE /v1/tokens/ci-viewer", "404"}},
		{name: "audit bad since", args: []string{"audit", "--since", "yesterday"}, wantErr: `--since "yesterday": want a time`},
		{name: "rack import bad line", args: []string{"rack", "import", "{dir}/bad.csv"}, wantErr: "line 3, field mac"},
		{name: "rack import bad imports nothing", args: []string{"rack", "list"}, notWant: []string{"r1"}},
		{name: "rack import", args: []string{"rack", "import", "{dir}/good.csv"}, want: []string{"imported 2 servers: 2 new (Enrolled), 0 known already"}},
		{name: "rack import stdin", args: []string{"rack", "import", "-"}, stdin: "rack,slot,mac\nr1,1,52:54:00:bb:00:01\n", want: []string{"1 known already"}},
		{name: "rack list", args: []string{"rack", "list"}, want: []string{"RACK", "r1", "2", "Enrolled 2"}},
		{name: "rack show", args: []string{"rack", "show", "r1"}, want: []string{"SLOT", "1", "52:54:00:bb:00:01", "Enrolled", "2", "52:54:00:bb:00:02"}},
		{name: "rack show empty", args: []string{"rack", "show", "r9"}, wantErr: "rack r9 has no nodes"},
		{name: "rack power without BMCs", args: []string{"rack", "power", "status", "r1"}, wantErr: "failed on 2 of 2 nodes"},

		// Shell completion: the names come from loomd.
		{name: "complete node ids", args: []string{"__complete", "node", "show", ""}, want: []string{"{maint}", "{host}", ":4"}},
		{name: "complete node ids by prefix", args: []string{"__complete", "node", "show", "{host}"}, want: []string{"{host}"}, notWant: []string{"{maint}"}},
		{name: "complete power op then node", args: []string{"__complete", "node", "power", ""}, want: []string{"cycle", "pxe-once"}},
		{name: "complete power node", args: []string{"__complete", "node", "power", "on", ""}, want: []string{"{host}"}},
		{name: "complete profile flag", args: []string{"__complete", "node", "provision", "{maint}", "--profile", ""}, want: []string{"p1"}},
		{name: "complete package flag", args: []string{"__complete", "vm", "create", "--package", ""}, want: []string{"host", "web"}},
		{name: "complete vm ids", args: []string{"__complete", "vm", "stop", ""}, want: []string{"vm-"}},
		{name: "complete racks", args: []string{"__complete", "rack", "watch", ""}, want: []string{"r1"}},
		{name: "complete image names", args: []string{"__complete", "image", "rm", "w"}, want: []string{"web"}, notWant: []string{"host"}},
		{name: "vm delete", args: []string{"vm", "delete", "{vm}", "-o", "json"}, want: []string{`"id": "{vm}"`, `"desired": "deleted"`}},
		{name: "vm gone", args: []string{"vm", "show", "{vm}"}, wantErr: "not found"},

		// Services: deployed onto the host, scaled, deleted.
		{name: "service bad manifest", args: []string{"service", "deploy", "-"}, stdin: "name: gb\nroles:\n  - name: work\n    kind: worker\n    package: web\n    instances: lots\n",
			wantErr: "manifest: line 6"},
		{name: "service unknown package", args: []string{"service", "deploy", "-"}, stdin: "name: gb\nroles:\n  - {name: work, kind: worker, package: nosuch, instances: 1}\n",
			wantErr: `role work: package "nosuch" is not a stored image`},
		{name: "service refused leaves nothing", args: []string{"service", "list", "-o", "json"}, want: []string{"[]"}},
		{name: "service deploy", args: []string{"service", "deploy", "-"}, stdin: "name: gb\nupdateDomains: 2\nroles:\n  - {name: work, kind: worker, package: web, instances: 3, memory: 64MiB, health: {path: /healthz, interval: 3s, failures: 2}}\n",
			want: []string{"service gb: deployed (3 work instances being placed"}},
		{name: "service deploy twice", args: []string{"service", "deploy", "-"}, stdin: "name: gb\nroles:\n  - {name: work, kind: worker, package: web, instances: 1}\n",
			wantErr: "service gb: already exists"},
		{name: "instances placed", args: []string{"instance", "list", "gb", "-o", "json"}, check: func(t *testing.T, _ string) {
			ins := f.instances(t, "gb", func(ins []api.Instance) bool { return len(ins) == 3 })
			uds := map[int]int{}
			for _, in := range ins {
				if in.Node != f.host || in.State != api.InstancePending || in.Role != "work" {
					t.Fatalf("instance %+v: want Pending on %s (its host has not reported it yet)", in, f.host)
				}
				uds[in.UpdateDomain]++
			}
			if uds[0] != 2 || uds[1] != 1 {
				t.Fatalf("update domains %v, want 2 in 0 and 1 in 1", uds)
			}
		}},
		{name: "instance table", args: []string{"instance", "list"}, want: []string{"SERVICE", "UD", "RACK", "gb", "work", "{host}", "Pending"}},
		{name: "service show", args: []string{"service", "show", "gb"}, want: []string{"Update domains:", "2 (upgrade auto)", "Role work:", "worker, 0 of 3 Ready, 1 vCPUs 64 MiB each, package web, health GET /healthz every 3s (timeout 2s, out after 2 failing)", "STATE", "Pending"}},
		{name: "image used by a service", args: []string{"image", "rm", "web"}, wantErr: "service gb"},
		{name: "service scale unknown role", args: []string{"service", "scale", "gb", "nosuch", "1"}, wantErr: `service gb has no role "nosuch"`},
		{name: "service scale bad count", args: []string{"service", "scale", "gb", "work", "--", "-2"}, wantErr: "instances: -2: want 0 to 1000"},
		{name: "service scale down", args: []string{"service", "scale", "gb", "work", "1"}, want: []string{"service gb: role work scaled to 1 instances"}, check: func(t *testing.T, _ string) {
			f.instances(t, "gb", func(ins []api.Instance) bool {
				n := 0
				for _, in := range ins {
					if in.State != api.InstanceStopping {
						n++
					}
				}
				return n == 1 && len(ins) == 3 // the two others: Stopping until their host removes them
			})
		}},
		{name: "instance stop of a plain VM", args: []string{"instance", "stop", "vm-nosuch"}, wantErr: "not found"},
		{name: "instance reboot", args: []string{"instance", "list", "gb", "-o", "json"}, check: func(t *testing.T, out string) {
			var ins []api.Instance
			if err := json.Unmarshal([]byte(out), &ins); err != nil || len(ins) == 0 {
				t.Fatalf("instances: %v %s", err, out)
			}
			o, _, err := f.loom(t, "", "instance", "reboot", ins[0].ID)
			if err != nil || !strings.Contains(o, "(gb/work): reboot requested") {
				t.Fatalf("instance reboot: %v %s", err, o)
			}
		}},
		{name: "service list", args: []string{"service", "list"}, want: []string{"NAME", "gb", "work (worker) 1", "2", "auto"}},
		{name: "complete services", args: []string{"__complete", "service", "scale", ""}, want: []string{"gb"}},
		{name: "usage", args: []string{"usage", "--since", "1h"}, want: []string{"PERIOD START", "INSTANCE-SECONDS"}},
		{name: "usage csv", args: []string{"usage", "-o", "csv", "--service", "gb"}, want: []string{"start,end,service,role,vcpus,memory_mb,instance_seconds,channel_bytes"}},
		{name: "usage bad since", args: []string{"usage", "--since", "yesterday"}, wantErr: "--since \"yesterday\": want a time"},
		{name: "csv elsewhere", args: []string{"service", "list", "-o", "csv"}, wantErr: "only loom usage writes CSV"},
		{name: "service queues none", args: []string{"service", "queues", "gb"}, want: []string{"QUEUE", "MESSAGES", "HIDDEN"}},
		{name: "service queues json", args: []string{"service", "queues", "gb", "-o", "json"}, want: []string{"[]"}},
		{name: "service queues missing", args: []string{"service", "queues", "nope"}, wantErr: "service nope: not found"},
		{name: "service delete", args: []string{"service", "delete", "gb"}, want: []string{"service gb: deleted"}, check: func(t *testing.T, _ string) {
			f.instances(t, "", func(ins []api.Instance) bool {
				for _, in := range ins {
					if in.State != api.InstanceStopping {
						return false
					}
				}
				return true
			})
		}},
		{name: "service gone", args: []string{"service", "show", "gb"}, wantErr: "not found"},
		{name: "node delete missing", args: []string{"node", "delete", "n-nosuch"}, wantErr: "not found"},
		{name: "node delete", args: []string{"node", "delete", "{maint}"}, want: []string{"node {maint}: deleted; its certificate is refused from now on"}},
		{name: "node deleted", args: []string{"node", "show", "{maint}"}, wantErr: "not found"},
		{name: "completion bash", args: []string{"completion", "bash"}, want: []string{"bash completion V2 for loom", "__loom_"}},
		{name: "completion zsh", args: []string{"completion", "zsh"}, want: []string{"#compdef loom"}},
		{name: "completion fish", args: []string{"completion", "fish"}, want: []string{"complete -c loom"}},
		{name: "help", args: []string{"node", "--help"}, want: []string{"provision", "decommission", "--output"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := f.loom(t, tc.stdin, tc.args...)
			r := strings.NewReplacer("{maint}", f.maint, "{host}", f.host, "{vm}", f.vm)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), r.Replace(tc.wantErr)) {
					t.Fatalf("loom %s: error %v, want one containing %q\nstdout:\n%s", strings.Join(tc.args, " "), err, tc.wantErr, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("loom %s: %v\nstderr: %s", strings.Join(tc.args, " "), err, stderr)
			}
			for _, w := range tc.want {
				if w = r.Replace(w); !strings.Contains(out, w) {
					t.Fatalf("loom %s: %q missing in:\n%s", strings.Join(tc.args, " "), w, out)
				}
			}
			for _, w := range tc.notWant {
				if w = r.Replace(w); strings.Contains(out, w) {
					t.Fatalf("loom %s: %q should not be in:\n%s", strings.Join(tc.args, " "), w, out)
				}
			}
			if tc.check != nil {
				tc.check(t, out)
			}
		})
	}
}

// instances polls loom instance list until ok holds (the controller
// works in the background), and returns what it saw last.
func (f *fabric) instances(t *testing.T, svc string, ok func([]api.Instance) bool) []api.Instance {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _, err := f.loom(t, "", "instance", "list", svc, "-o", "json")
		var ins []api.Instance
		if err == nil {
			err = json.Unmarshal([]byte(out), &ins)
		}
		if err == nil && ok(ins) {
			return ins
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances of %q not as wanted after 15s: %v\n%s", svc, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCLIAuth(t *testing.T) {
	f := startFabric(t)
	bad := filepath.Join(f.dir, "bad.token")
	if err := os.WriteFile(bad, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(t.Context(), []string{"--token-file", bad, "nodes"}, func(k string) string { return f.env[k] }, nil, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v, want a 401", err)
	}
	// LOOM_TOKEN without --token-file.
	tok, err := os.ReadFile(f.env["TOKEN_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"LOOM_ADDR": f.env["LOOM_ADDR"], "LOOM_TOKEN": strings.TrimSpace(string(tok))}
	if err := run(t.Context(), []string{"nodes"}, func(k string) string { return env[k] }, nil, &out, &out); err != nil {
		t.Fatalf("LOOM_TOKEN: %v", err)
	}
	// --addr wins over LOOM_ADDR.
	err = run(t.Context(), []string{"--addr", "unix://" + filepath.Join(f.dir, "nosuch.sock"), "nodes"}, func(k string) string { return env[k] }, nil, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "nosuch.sock") {
		t.Fatalf("--addr to a missing socket: %v", err)
	}
	if err := run(t.Context(), []string{"--token-file", filepath.Join(f.dir, "none"), "nodes"}, func(k string) string { return env[k] }, nil, &out, &out); err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Fatalf("missing token file: %v", err)
	}
	// https: the CA is needed, and checked.
	if err := run(t.Context(), []string{"--addr", "https://127.0.0.1:1", "nodes"}, func(k string) string { return env[k] }, nil, &out, &out); err == nil || !strings.Contains(err.Error(), "--ca-file") {
		t.Fatalf("https without a CA: %v, want one naming --ca-file", err)
	}
	if err := run(t.Context(), []string{"--addr", "https://127.0.0.1:1", "--ca-file", f.env["TOKEN_FILE"], "nodes"}, func(k string) string { return env[k] }, nil, &out, &out); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a CA file without a certificate: %v", err)
	}
}
