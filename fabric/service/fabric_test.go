package service_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/loomd"
)

// TestHostLossReplacesInstances runs a real loomd (embedded etcd) with
// three fake host agents in-process: they register in host mode and
// heartbeat, reporting their guests Running. A service of 3 instances is
// spread one per host; one agent stops; after the grace its host is
// Unreachable, after LostAfter Lost, and its instance is replaced on
// another host, while the other two stay where they are.
func TestHostLossReplacesInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("runs loomd for ~15 s")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "api.sock")
	cfg := &loomd.Config{DataDir: filepath.Join(dir, "data"), API: "127.0.0.1:0", APIUnix: sock,
		HeartbeatInterval: 300 * time.Millisecond, Grace: time.Second, LostAfter: 2 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cfg.Start(ctx, nil) }()
	defer func() {
		cancel()
		<-done
	}()
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(cfg.DataDir, name))
		return strings.TrimSpace(string(b))
	}
	op := &client.Client{BaseURL: "unix://" + sock}
	waitFor(t, 30*time.Second, "loomd's API", func() bool {
		op.Token = read(loomd.OperatorTokenFile)
		_, err := op.Nodes(ctx)
		return op.Token != "" && err == nil
	})
	if _, err := op.AddImage(ctx, "work", strings.NewReader(strings.Repeat("\x00", 4096)), nil); err != nil {
		t.Fatal(err)
	}

	// Three fake host agents: register, then heartbeat with their guests
	// reported Running, until their context ends.
	agent := &client.Client{BaseURL: op.BaseURL, Token: read(loomd.EnrollTokenFile)}
	hosts := map[string]context.CancelFunc{}
	for i := range 3 {
		mac := fmt.Sprintf("52:54:00:cc:00:%02x", i+1)
		r, err := agent.Register(ctx, api.Registration{Mode: api.ModeHost, MAC: mac, AgentVersion: "fake",
			Accel: &api.Accel{Accel: "tcg", CPU: "max"},
			Inventory: api.Inventory{CPU: api.CPU{Count: 4, Model: "x"}, Memory: 2 << 30,
				NICs: []api.NIC{{Name: "eth0", MAC: mac, Link: true}}}})
		if err != nil {
			t.Fatal(err)
		}
		hctx, stop := context.WithCancel(ctx)
		hosts[r.NodeID] = stop
		go heartbeat(hctx, agent, r)
	}

	if _, err := op.DeployService(ctx, []byte("name: svc\nroles:\n  - {name: work, kind: worker, package: work, instances: 3, memory: 64MiB}\n")); err != nil {
		t.Fatal(err)
	}
	var before []api.Instance
	waitFor(t, 15*time.Second, "3 Ready instances, one per host", func() bool {
		ins, err := op.Instances(ctx, "svc")
		if err != nil || len(ins) != 3 {
			return false
		}
		on := map[string]bool{}
		for _, in := range ins {
			if in.State != api.InstanceReady {
				return false
			}
			on[in.Node] = true
		}
		before = ins
		return len(on) == 3
	})

	lostHost := before[0].Node
	hosts[lostHost]() // its agent stops heartbeating
	start := time.Now()
	waitFor(t, 20*time.Second, "the lost host's instance replaced", func() bool {
		ins, err := op.Instances(ctx, "svc")
		if err != nil {
			return false
		}
		ready, stopping := 0, 0
		for _, in := range ins {
			switch {
			case in.Node == lostHost && in.State == api.InstanceStopping && strings.Contains(in.Reason, "is lost"):
				stopping++
			case in.Node != lostHost && in.State == api.InstanceReady:
				ready++
			}
		}
		return ready == 3 && stopping == 1
	})
	t.Logf("replaced %.1fs after the host went silent (grace 1s + lost after 2s)", time.Since(start).Seconds())
	// The two instances on healthy hosts never moved.
	ins, err := op.Instances(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, in := range ins {
		kept[in.ID] = true
	}
	for _, in := range before[1:] {
		if !kept[in.ID] {
			t.Fatalf("instance %s on a healthy host was moved", in.ID)
		}
	}
	n, err := op.Node(ctx, lostHost)
	if err != nil || n.Phase != api.PhaseUnreachable {
		t.Fatalf("lost host: %v %v", n.Phase, err)
	}
}

// heartbeat is a fake host agent: every 200 ms it reads its goal and
// reports each goal VM Running (deleted ones gone), until ctx ends.
func heartbeat(ctx context.Context, c *client.Client, r api.RegisterResponse) {
	for ctx.Err() == nil {
		var st []api.VMStatus
		if g, _, err := c.Goal(ctx, r.NodeID, r.Credential, -1, 0); err == nil {
			for _, v := range g.VMs {
				if v.Desired != api.VMDeleted {
					st = append(st, api.VMStatus{ID: v.ID, State: api.VMStateRunning, Observed: time.Now()})
				}
			}
		}
		// Errors show in the test as instances that do not turn Ready.
		_, _ = c.Status(ctx, r.NodeID, r.Credential, api.Status{VMs: st, VMsComplete: true})
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
