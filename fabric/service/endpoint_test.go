package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/loomd"
)

// TestEndpointSpreadsOverReadyInstances: a web role's endpoint spreads
// connections over its Ready instances, drops an instance as soon as its
// host reports it unhealthy, skips a host port that refuses (the client
// never sees it), and a second service cannot take the same port.
func TestEndpointSpreadsOverReadyInstances(t *testing.T) {
	t.Parallel()
	f := startFabric(t, &loomd.Config{EndpointIP: "127.0.0.1"})
	for range 3 {
		h := f.addHost("")
		h.mu.Lock()
		h.Serve = true
		h.mu.Unlock()
	}
	port := freePort(t)
	ctx := context.Background()
	if _, err := f.op.DeployService(ctx, fmt.Appendf(nil, "name: gb\nroles:\n  - {name: web, kind: web, package: work, instances: 3, memory: 64MiB, endpoint: {port: %d}}\n", port)); err != nil {
		t.Fatal(err)
	}
	inRotation := func(n int) func() bool {
		return func() bool {
			s, err := f.op.Service(ctx, "gb")
			return err == nil && len(s.Endpoints) == 1 && s.Endpoints[0].InRotation == n
		}
	}
	waitFor(t, 15*time.Second, "3 instances in the endpoint's rotation", inRotation(3))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	hits := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(c)
			_ = c.Close() // read to the end
			if err != nil || !strings.HasPrefix(string(b), "hello from ") {
				t.Fatalf("through the endpoint: %q, %v", b, err)
			}
			got[strings.TrimSpace(strings.TrimPrefix(string(b), "hello from "))]++
		}
		return got
	}
	if got := hits(9); len(got) != 3 {
		t.Errorf("9 connections reached %v, want all 3 instances, 3 each", got)
	}

	ins := f.instances("gb")
	hostOf := func(in api.Instance) *fakeHost {
		for _, h := range f.hosts {
			if h.ID() == in.Node {
				return h
			}
		}
		t.Fatalf("no host %s", in.Node)
		return nil
	}
	// An instance crashes and stays down (its host takes long to boot it).
	sick := hostOf(ins[0])
	sick.mu.Lock()
	sick.BootTime = time.Hour
	sick.mu.Unlock()
	sick.Crash(ins[0].ID)
	start := time.Now()
	waitFor(t, 5*time.Second, "the crashed instance out of rotation", inRotation(2))
	t.Logf("out of rotation %.1fs after the crash", time.Since(start).Seconds())
	if got := hits(6); got[ins[0].ID] > 0 || len(got) != 2 {
		t.Errorf("after the crash: %v, want only the 2 healthy instances", got)
	}
	// A host port that refuses while its host still says Running: skipped.
	hostOf(ins[1]).Refuse(ins[1].ID)
	if got := hits(6); got[ins[2].ID] != 6 {
		t.Errorf("with one instance refusing: %v, want all 6 on %s", got, ins[2].ID)
	}

	if _, err := f.op.DeployService(ctx, fmt.Appendf(nil, "name: other\nroles:\n  - {name: web, kind: web, package: work, instances: 1, memory: 64MiB, endpoint: {port: %d}}\n", port)); err == nil || !strings.Contains(err.Error(), "taken by role web of service gb") {
		t.Errorf("a second service on the same port: %v", err)
	}
	// A port something else holds: the service says why it has no endpoint.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := f.op.DeployService(ctx, fmt.Appendf(nil, "name: third\nroles:\n  - {name: web, kind: web, package: work, instances: 1, memory: 64MiB, endpoint: {port: %d}}\n", busy.Addr().(*net.TCPAddr).Port)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the endpoint's error shown", func() bool {
		s, err := f.op.Service(ctx, "third")
		return err == nil && len(s.Endpoints) == 1 && strings.Contains(s.Endpoints[0].Error, "address already in use")
	})
	// Nor can an upgrade move a service onto another's port.
	if _, err := f.op.UpgradeService(ctx, "third", fmt.Appendf(nil, "name: third\nroles:\n  - {name: web, kind: web, package: work, instances: 1, memory: 64MiB, endpoint: {port: %d}}\n", port), ""); err == nil || !strings.Contains(err.Error(), "taken by role web of service gb") {
		t.Errorf("an upgrade onto another service's port: %v", err)
	}
	if s, err := f.op.Service(ctx, "third"); err != nil || s.Walk != nil || s.Roles[0].Endpoint.Port != busy.Addr().(*net.TCPAddr).Port {
		t.Errorf("after the refused upgrade: walk %v, port %d, %v; want no walk, the old port", s.Walk, s.Roles[0].Endpoint.Port, err)
	}
	// Deleting the service closes its endpoint.
	if err := f.op.DeleteService(ctx, "gb"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the endpoint closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close() // still open
		}
		return err != nil
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
