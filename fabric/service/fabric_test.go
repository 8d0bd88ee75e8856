package service_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/loomd"
)

// TestHostLossReplacesInstances: a service of 3 instances is spread one
// per fake host; one host goes silent; after the grace it is Unreachable,
// after LostAfter Lost, and its instance is replaced on another host,
// while the other two stay where they are.
func TestHostLossReplacesInstances(t *testing.T) {
	t.Parallel()
	f := startFabric(t, &loomd.Config{LostAfter: 2 * time.Second})
	for range 3 {
		f.addHost("")
	}
	ctx := context.Background()
	if _, err := f.op.DeployService(ctx, []byte("name: svc\nroles:\n  - {name: work, kind: worker, package: work, instances: 3, memory: 64MiB}\n")); err != nil {
		t.Fatal(err)
	}
	var before []api.Instance
	waitFor(t, 15*time.Second, "3 Ready instances, one per host", func() bool {
		ins := f.instances("svc")
		on := map[string]bool{}
		for _, in := range ins {
			if in.State != api.InstanceReady {
				return false
			}
			on[in.Node] = true
		}
		before = ins
		return len(ins) == 3 && len(on) == 3
	})

	lostHost := before[0].Node
	for _, h := range f.hosts {
		if h.ID() == lostHost {
			h.Stop()
		}
	}
	start := time.Now()
	waitFor(t, 20*time.Second, "the lost host's instance replaced", func() bool {
		ready, stopping := 0, 0
		for _, in := range f.instances("svc") {
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
	kept := map[string]bool{}
	for _, in := range f.instances("svc") {
		kept[in.ID] = true
	}
	for _, in := range before[1:] {
		if !kept[in.ID] {
			t.Fatalf("instance %s on a healthy host was moved", in.ID)
		}
	}
	n, err := f.op.Node(ctx, lostHost)
	if err != nil || n.Phase != api.PhaseUnreachable {
		t.Fatalf("lost host: %v %v", n.Phase, err)
	}
}

// TestQueuesThroughTheFabric: a web instance puts, a worker instance gets
// (through their hosts' credentials, as the host agents do for their
// guests); an undeleted message comes back after its visibility timeout;
// a stale receipt is refused; messages survive a loomd restart; one
// service cannot reach another's queues, a host cannot speak for another
// host's guest, a single VM has no queues, and bounds are clear errors.
func TestQueuesThroughTheFabric(t *testing.T) {
	t.Parallel()
	f := startFabric(t, &loomd.Config{})
	a, b := f.addHost(""), f.addHost("")
	ctx := context.Background()
	for _, m := range []string{
		"name: gb\nroles:\n  - {name: web, kind: web, package: work, instances: 1, memory: 64MiB, endpoint: {port: 80}}\n  - {name: worker, kind: worker, package: work, instances: 1, memory: 64MiB}\n",
		"name: other\nroles:\n  - {name: w, kind: worker, package: work, instances: 1, memory: 64MiB}\n",
	} {
		if _, err := f.op.DeployService(ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	single, err := f.op.CreateVM(ctx, api.VMRequest{Package: "work", MemoryMB: 64})
	if err != nil {
		t.Fatal(err)
	}
	vm := map[string]api.Instance{}
	waitFor(t, 15*time.Second, "the instances placed", func() bool {
		for _, in := range f.instances("") {
			if in.Node != "" {
				vm[in.Service+"/"+in.Role] = in
			}
		}
		return len(vm) == 3
	})
	hostOf := func(in api.Instance) (*fakeHost, *fakeHost) { // its host, and the other
		if in.Node == a.ID() {
			return a, b
		}
		return b, a
	}
	call := func(in api.Instance, req api.QueueRequest) (api.QueueReply, error) {
		h, _ := hostOf(in)
		return h.c.Queue(ctx, h.reg.NodeID, in.ID, req)
	}
	code := func(err error) int {
		var se *client.StatusError
		if errors.As(err, &se) {
			return se.Code
		}
		return 0
	}
	web, worker, other := vm["gb/web"], vm["gb/worker"], vm["other/w"]

	put, err := call(web, api.QueueRequest{Op: api.QueuePut, Queue: "entries", Body: []byte("hello")})
	if err != nil || put.ID == "" {
		t.Fatalf("put: %+v, %v", put, err)
	}
	if r, err := call(other, api.QueueRequest{Op: api.QueueGet, Queue: "entries"}); err != nil || r.Message != nil {
		t.Errorf("another service's get = %+v, %v; want nothing (its own, empty queue)", r, err)
	}
	got, err := call(worker, api.QueueRequest{Op: api.QueueGet, Queue: "entries", Visibility: api.Duration(time.Second)})
	if err != nil || got.Message == nil || string(got.Message.Body) != "hello" || got.Message.ID != put.ID {
		t.Fatalf("worker's get: %+v, %v", got, err)
	}
	if r, err := call(worker, api.QueueRequest{Op: api.QueueGet, Queue: "entries"}); err != nil || r.Message != nil {
		t.Errorf("get while the message is hidden = %+v, %v; want none", r, err)
	}
	// The worker "dies" before deleting: the message comes back.
	time.Sleep(1100 * time.Millisecond)
	again, err := call(worker, api.QueueRequest{Op: api.QueueGet, Queue: "entries", Visibility: api.Duration(time.Minute)})
	if err != nil || again.Message == nil || again.Message.ID != put.ID || again.Message.Deliveries != 2 {
		t.Fatalf("get after the visibility timeout: %+v, %v; want the message again, delivery 2", again, err)
	}
	if _, err := call(worker, api.QueueRequest{Op: api.QueueDelete, Queue: "entries", ID: put.ID, Receipt: got.Message.Receipt}); code(err) != http.StatusConflict {
		t.Errorf("delete with the stale receipt: %v, want 409", err)
	}

	// A second message, then loomd restarts: both are still there.
	if _, err := call(web, api.QueueRequest{Op: api.QueuePut, Queue: "entries", Body: []byte("second")}); err != nil {
		t.Fatal(err)
	}
	f.restart()
	// A peek (the web role showing what is queued) sees the visible one.
	if r, err := call(web, api.QueueRequest{Op: api.QueuePeek, Queue: "entries", Max: 5}); err != nil || r.Length != 2 || len(r.Messages) != 1 || string(r.Messages[0].Body) != "second" || r.Messages[0].Receipt != "" {
		t.Errorf("peek after a restart: %+v, %v; want \"second\" of 2, no receipt", r, err)
	}
	if _, err := call(web, api.QueueRequest{Op: api.QueuePeek, Queue: "entries", Max: 33}); code(err) != http.StatusBadRequest {
		t.Errorf("peek of 33: %v, want 400", err)
	}
	if _, err := call(worker, api.QueueRequest{Op: api.QueueDelete, Queue: "entries", ID: put.ID, Receipt: again.Message.Receipt}); err != nil {
		t.Errorf("delete with the latest receipt after a restart: %v", err)
	}
	sec, err := call(worker, api.QueueRequest{Op: api.QueueGet, Queue: "entries"})
	if err != nil || sec.Message == nil || string(sec.Message.Body) != "second" {
		t.Errorf("get after a restart: %+v, %v; want the second message", sec, err)
	}
	qs, err := f.op.Queues(ctx, "gb")
	if err != nil || len(qs) != 1 || qs[0].Name != "entries" || qs[0].Messages != 1 || qs[0].Hidden != 1 {
		t.Errorf("loom's view of the queues: %+v, %v; want entries with 1 message, hidden", qs, err)
	}

	// Refusals.
	_, otherHost := hostOf(web)
	if _, err := otherHost.c.Queue(ctx, otherHost.reg.NodeID, web.ID, api.QueueRequest{Op: api.QueueGet, Queue: "entries"}); code(err) != http.StatusForbidden {
		t.Errorf("a host speaking for another host's guest: %v, want 403", err)
	}
	if _, err := b.c.Queue(ctx, a.reg.NodeID, web.ID, api.QueueRequest{Op: api.QueueGet, Queue: "entries"}); code(err) != http.StatusForbidden {
		t.Errorf("another host's certificate: %v, want 403", err)
	}
	sh := a
	if single.Node == b.ID() {
		sh = b
	}
	if _, err := sh.c.Queue(ctx, sh.reg.NodeID, single.ID, api.QueueRequest{Op: api.QueueGet, Queue: "entries"}); code(err) != http.StatusForbidden || !strings.Contains(err.Error(), "not an instance") {
		t.Errorf("a single VM's queue call: %v, want 403 not an instance", err)
	}
	for _, bad := range []api.QueueRequest{
		{Op: api.QueuePut, Queue: "entries", Body: make([]byte, api.MaxQueueMessage+1)},
		{Op: api.QueuePut, Queue: "Bad/Name"},
		{Op: api.QueueGet, Queue: "entries", Visibility: api.Duration(24 * time.Hour)},
		{Op: api.QueueDelete, Queue: "entries", ID: put.ID},
		{Op: "pop", Queue: "entries"},
	} {
		if _, err := call(web, bad); code(err) != http.StatusBadRequest {
			t.Errorf("%s %q: %v, want 400", bad.Op, bad.Queue, err)
		}
	}
	if _, err := f.op.Queues(ctx, "nope"); code(err) != http.StatusNotFound {
		t.Errorf("queues of a missing service: %v, want 404", err)
	}
}
