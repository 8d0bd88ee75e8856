package lab

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/bmc"
)

// fakeQMP is a QEMU monitor that runs and stops and records commands.
type fakeQMP struct {
	mu      sync.Mutex
	running bool
	cmds    []string
}

func (f *fakeQMP) serve(t *testing.T, path string) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.conn(c)
		}
	}()
}

func (f *fakeQMP) conn(c net.Conn) {
	defer c.Close()
	c.Write([]byte(`{"QMP":{"version":{"qemu":{"major":7,"minor":2,"micro":0}},"capabilities":[]}}` + "\n"))
	dec := json.NewDecoder(c) // like QEMU: a JSON stream, newlines or not
	for {
		var req struct{ Execute string }
		if dec.Decode(&req) != nil {
			return
		}
		f.mu.Lock()
		reply := `{"return":{}}`
		switch req.Execute {
		case "query-status":
			b, _ := json.Marshal(map[string]any{"return": map[string]any{"running": f.running, "status": map[bool]string{true: "running", false: "paused"}[f.running]}})
			reply = string(b)
		case "stop":
			f.running = false
		case "cont":
			f.running = true
		}
		if req.Execute != "qmp_capabilities" && req.Execute != "query-status" {
			f.cmds = append(f.cmds, req.Execute)
		}
		f.mu.Unlock()
		c.Write([]byte(reply + "\n"))
	}
}

// TestVirtualBMC drives the lab's Redfish BMC with Loom's Redfish client.
func TestVirtualBMC(t *testing.T) {
	q := &fakeQMP{running: true}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	q.serve(t, sock)
	v := &VirtualBMC{QMP: sock, Name: "server1", Username: "admin", Password: "s3cret"}
	srv := httptest.NewServer(v)
	defer srv.Close()
	target := bmc.Target{BMC: api.BMC{Protocol: api.BMCRedfish, Address: srv.URL, Credential: "lab"}, Username: "admin", Password: "s3cret"}
	ctx := context.Background()
	for _, step := range []struct {
		op   bmc.Op
		want string
	}{
		{bmc.OpStatus, "On"}, {bmc.OpOff, "Off"}, {bmc.OpStatus, "Off"}, {bmc.OpPXEOnce, "Off"},
		{bmc.OpOn, "On"}, {bmc.OpCycle, "On"}, {bmc.OpOff, "Off"}, {bmc.OpCycle, "On"},
	} {
		got, err := bmc.Do(ctx, target, step.op)
		if err != nil {
			t.Fatalf("%s: %v", step.op, err)
		}
		if got != step.want {
			t.Errorf("%s: power %q, want %q", step.op, got, step.want)
		}
	}
	q.mu.Lock()
	cmds := slices.Clone(q.cmds)
	q.mu.Unlock()
	want := []string{"stop", "system_reset", "cont", "system_reset", "cont", "stop", "system_reset", "cont"}
	if !slices.Equal(cmds, want) {
		t.Errorf("QMP commands %v, want %v", cmds, want)
	}

	bad := target
	bad.Password = "wrong"
	if _, err := bmc.Do(ctx, bad, bmc.OpCycle); !errors.Is(err, bmc.ErrAuth) {
		t.Errorf("wrong password: err = %v, want bmc.ErrAuth", err)
	}
	q.mu.Lock()
	n := len(q.cmds)
	q.mu.Unlock()
	if n != len(want) {
		t.Errorf("a refused login still reached QEMU: %d commands", n)
	}
	if _, err := bmc.Do(ctx, bmc.Target{BMC: api.BMC{Protocol: "ipmi", Address: srv.URL}}, bmc.OpStatus); err == nil {
		t.Errorf("unknown protocol accepted")
	}
}
