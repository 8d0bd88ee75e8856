package loomd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/loomd/rig"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// loomdBin builds loomd once for the tests that run replicas as
// processes.
func loomdBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "loomd-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "loomd")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/loomd").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("building loomd: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func startCluster(t *testing.T, n int, extra ...string) *rig.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts loomd replicas as processes")
	}
	dir := t.TempDir()
	c, err := rig.Start(context.Background(), loomdBin(t), dir, n, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, r := range c.Replicas {
				b, _ := os.ReadFile(r.Log) // best effort, for the failure's context
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("--- %s (last lines of %s)\n%s", r.Name, r.Log, strings.Join(lines[max(0, len(lines)-25):], "\n"))
			}
		}
	})
	return c
}

// haBeat is the stream's heartbeat (the nodes' grace is 4 of them): 5
// times the default, and short enough that a failover of ~1-2 s is a
// good part of a grace. (500 ms made the grace 2 s, which a thousand
// heartbeating nodes retrying at once on two loaded cores overran; 1 s,
// a 4 s grace, was overrun once in make test with VM tests on the same
// two cores and the new leader starting its event recorder.)
const haBeat = 1500 * time.Millisecond

// ack is one acknowledged write of the stream.
type ack struct {
	kind, key string // "register" MAC, "credential" name
	node      string
	start, at time.Time // the write was sent, acknowledged
}

// stream writes through every replica (the client fails over) until
// stop: registrations of new nodes, which then heartbeat, and BMC
// credentials.
type stream struct {
	c, enroll *client.Client
	host      string // a host node for VM creates ("" none)
	mu        sync.Mutex
	acks      []ack
	failed    []error
	hbFailed  int
	hbs       int
	wg        sync.WaitGroup
}

func (s *stream) add(a ack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks = append(s.acks, a)
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = append(s.failed, err)
}

func (s *stream) run(ctx context.Context, writer int) {
	defer s.wg.Done()
	for i := 0; ctx.Err() == nil; i++ {
		start := time.Now()
		mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", writer, i>>16&0xff, i>>8&0xff, i&0xff)
		r, nc, err := s.enroll.Enroll(ctx, api.Registration{MAC: mac, AgentVersion: "ha-test",
			Inventory: api.Inventory{NICs: []api.NIC{{Name: "eth0", MAC: mac, Link: true}}}})
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Errorf("register %s: %w", mac, err))
			}
			continue
		}
		s.add(ack{kind: "register", key: mac, node: r.NodeID, start: start, at: time.Now()})
		s.wg.Add(1)
		go s.heartbeat(ctx, r.NodeID, nc)
		name := fmt.Sprintf("p-%d-%d", writer, i)
		start = time.Now()
		if _, err := s.c.PutCredential(ctx, api.Credential{Name: name, Username: "u", Password: "p"}); err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Errorf("credential %s: %w", name, err))
			}
			continue
		}
		s.add(ack{kind: "credential", key: name, start: start, at: time.Now()})
		if s.host == "" || i%4 != 0 {
			continue // a VM every 4th round: the host offers 1,024 vCPUs
		}
		start = time.Now()
		vm, err := s.c.CreateVM(ctx, api.VMRequest{Node: s.host, Package: "pkg", VCPUs: 1, MemoryMB: 64})
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Errorf("vm create: %w", err))
			}
			continue
		}
		s.add(ack{kind: "vm", key: vm.ID, start: start, at: time.Now()})
	}
}

func (s *stream) heartbeat(ctx context.Context, id string, c *client.Client) {
	defer s.wg.Done()
	for ctx.Err() == nil {
		_, err := c.Status(ctx, id, api.Status{})
		s.mu.Lock()
		s.hbs++
		if err != nil && ctx.Err() == nil {
			s.hbFailed++
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(haBeat):
		}
	}
}

// firstAfter is the first acknowledgement of a write sent after t.
func (s *stream) firstAfter(t time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.acks {
		if a.start.After(t) {
			return a.at, true
		}
	}
	return time.Time{}, false
}

// check replays the acknowledged writes against the store as a
// surviving replica shows it: every one is there, none twice, and no
// node went Unreachable.
func (s *stream) check(t *testing.T, c *client.Client) {
	t.Helper()
	ctx := context.Background()
	nodes, err := c.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := c.Credentials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byMAC := map[string][]api.Node{}
	for _, n := range nodes {
		byMAC[n.MAC] = append(byMAC[n.MAC], n)
		for _, h := range n.History {
			if h.To == api.PhaseUnreachable {
				t.Errorf("node %s went Unreachable at %v: %s", n.ID, h.At, h.Reason)
			}
		}
	}
	vms, err := c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	haveVM := map[string]int{}
	for _, v := range vms {
		haveVM[v.ID]++
	}
	haveCred := map[string]int{}
	for _, p := range creds {
		haveCred[p.Name]++
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	regs, profs, vmAcks := 0, 0, 0
	for _, a := range s.acks {
		switch a.kind {
		case "register":
			regs++
			ns := byMAC[a.key]
			if len(ns) != 1 || ns[0].ID != a.node {
				t.Errorf("acknowledged registration of %s as %s: stored as %v", a.key, a.node, ns)
			}
		case "vm":
			vmAcks++
			if haveVM[a.key] != 1 {
				t.Errorf("acknowledged VM %s stored %d times", a.key, haveVM[a.key])
			}
		case "credential":
			profs++
			if haveCred[a.key] != 1 {
				t.Errorf("acknowledged credential %s stored %d times", a.key, haveCred[a.key])
			}
		}
	}
	for mac, ns := range byMAC {
		if len(ns) > 1 {
			t.Errorf("MAC %s has %d nodes: a registration applied twice", mac, len(ns))
		}
	}
	t.Logf("checked %d registrations, %d credentials and %d VM creates acknowledged; %d nodes and %d VMs stored; %d heartbeats (%d failed); %d writes failed after failover",
		regs, profs, vmAcks, len(nodes), len(vms), s.hbs, s.hbFailed, len(s.failed))
	if len(vms) < vmAcks {
		t.Errorf("%d VMs stored for %d acknowledged creates", len(vms), vmAcks)
	}
	for _, err := range s.failed {
		t.Errorf("a write failed even with failover: %v", err)
	}
	if s.hbFailed > 0 {
		t.Errorf("%d heartbeats failed even with failover", s.hbFailed)
	}
}

// TestReplicasFailover: three replicas as processes; the leader is
// killed (-9) in the middle of a stream of writes; a new leader takes
// writes within seconds, no acknowledged write is lost or applied twice,
// heartbeats go on and no node goes Unreachable; the killed replica
// rejoins on its data directory. Then two of three are down: writes are
// refused with a clear answer, and taken again once one returns.
func TestReplicasFailover(t *testing.T) {
	c := startCluster(t, 3, "--heartbeat", haBeat.String())
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s := &stream{c: c.Client()}
	s.enroll = &client.Client{BaseURL: c.URLs(), Token: c.Replicas[0].EnrollToken(), TLS: c.Client().TLS}
	// VM creates need a package and a host with room, heartbeating.
	if _, err := s.c.AddImage(ctx, "pkg", bytes.NewReader(make([]byte, 8192)), nil); err != nil {
		t.Fatal(err)
	}
	hostMAC := "52:54:00:ee:00:01"
	host, hc, err := s.enroll.Enroll(ctx, api.Registration{Mode: api.ModeHost, MAC: hostMAC, GuestVCPUs: api.MaxGuestVCPUs,
		Accel:     &api.Accel{Accel: "tcg", CPU: "max"},
		Inventory: api.Inventory{CPU: api.CPU{Count: 64, Model: "t"}, Memory: 1 << 40, NICs: []api.NIC{{Name: "eth0", MAC: hostMAC, Link: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	s.host = host.NodeID
	s.add(ack{kind: "register", key: hostMAC, node: host.NodeID, start: time.Now(), at: time.Now()})
	s.wg.Add(1)
	go s.heartbeat(ctx, host.NodeID, hc)
	for w := range 2 {
		s.wg.Add(1)
		go s.run(ctx, w)
	}
	time.Sleep(2 * time.Second)
	li, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	c.Replicas[li].Kill()
	t.Logf("killed leader %s", c.Replicas[li].Name)
	time.Sleep(6 * time.Second)
	at, ok := s.firstAfter(killed)
	if !ok {
		t.Fatal("no write acknowledged in the 6 s after the leader was killed")
	}
	t.Logf("first write acknowledged %v after the kill", at.Sub(killed).Round(time.Millisecond))
	if d := at.Sub(killed); d > 5*time.Second {
		t.Errorf("failover took %v, want a few seconds", d)
	}
	nl, err := c.Leader(ctx)
	if err != nil || nl == li {
		t.Fatalf("after the kill: leader %d (killed %d), %v", nl, li, err)
	}
	// Every live replica shows the host's last heartbeat (the leader's
	// memory: followers ask it).
	for _, r := range c.Replicas {
		if !r.Running() {
			continue
		}
		n, err := r.Client(c.Token()).Node(ctx, s.host)
		if err != nil || time.Since(n.LastSeen) > 5*time.Second {
			t.Errorf("host as %s shows it: last seen %v, %v; want within 5 s", r.Name, n.LastSeen, err)
		}
	}
	stop()
	s.wg.Wait()
	s.check(t, c.Client())

	// The killed replica restarts on its data directory and catches up.
	if err := c.Restart(li); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(context.Background(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := c.Status(context.Background())
		healthy := 0
		for _, m := range st.Members {
			if m.Healthy && m.Lag < 50 {
				healthy++
			}
		}
		if err == nil && healthy == 3 {
			t.Logf("rejoined: %+v", st.Members)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted replica did not rejoin: %+v, %v", st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Two of three down: no quorum, writes refused (503, said why).
	li, err = c.Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	other := (li + 1) % 3
	survivor := (li + 2) % 3
	c.Replicas[li].Kill()
	c.Replicas[other].Kill()
	one := c.Replicas[survivor].Client(c.Token())
	one.Failover = 2 * time.Second
	wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_, err = one.PutCredential(wctx, api.Credential{Name: "no-quorum", Username: "u", Password: "p"})
	cancel()
	var se *client.StatusError
	if !errors.As(err, &se) || se.Code != 503 {
		t.Errorf("a write with 1 of 3 replicas up = %v, want a 503", err)
	} else {
		t.Logf("refused without quorum: %v", err)
	}
	if err := c.Restart(other); err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()
	cl.Failover = 30 * time.Second
	if _, err := cl.PutCredential(wctx, api.Credential{Name: "quorum-back", Username: "u", Password: "p"}); err != nil {
		t.Errorf("a write once 2 of 3 are up again: %v", err)
	}
}

// TestPausedLeaderIsDeposed: the leader is paused (SIGSTOP) until
// another leads, then continued: it must not act as the leader again
// (its fenced writes are refused; a write sent to it is refused or
// forwarded to the new leader, and lands once).
func TestPausedLeaderIsDeposed(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()

	// First: an image uploaded through any replica (it lands on the
	// leader's disk) is served by every one: the others fetch it from a
	// peer on the first miss.
	img := bytes.Repeat([]byte("replicated blob "), 1<<14)
	if _, err := c.Client().AddImage(ctx, "shared", bytes.NewReader(img), nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Replicas {
		var got bytes.Buffer
		if err := r.Client(c.Token()).Blob(ctx, "/v1/images/shared/blob", &got); err != nil {
			t.Errorf("blob from %s: %v", r.Name, err)
		} else if !bytes.Equal(got.Bytes(), img) {
			t.Errorf("blob from %s: %d bytes differ from the %d uploaded", r.Name, got.Len(), len(img))
		}
	}

	li, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := c.Replicas[li]
	if err := old.Pause(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	var nl string
	for deadline := time.Now().Add(20 * time.Second); nl == ""; {
		for i, r := range c.Replicas {
			if i == li {
				continue
			}
			if s, err := r.Client(c.Token()).ClusterSelf(ctx); err == nil && s.Leader {
				nl = r.Name
			}
		}
		if time.Now().After(deadline) {
			_ = old.Resume()
			t.Fatal("no new leader while the old one was paused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s leads %v after %s was paused", nl, time.Since(paused).Round(time.Millisecond), old.Name)
	if err := old.Resume(); err != nil {
		t.Fatal(err)
	}
	// At once, a write through the old leader alone.
	oc := old.Client(c.Token())
	_, werr := oc.PutCredential(ctx, api.Credential{Name: "after-pause", Username: "u", Password: "p"})
	var se *client.StatusError
	switch err := werr; {
	case err == nil:
		t.Log("the write sent to the old leader was forwarded to the new one")
	case errors.As(err, &se) && se.Code == 503:
		t.Logf("the old leader refused the write: %v", err)
	default:
		t.Errorf("write through the resumed old leader: %v, want success (forwarded) or 503", err)
	}
	// One leader in the end (the pause may cost a second election: the
	// paused member led raft too, and the sessions kept through it are
	// tested by their leases), and the write landed once.
	time.Sleep(3 * time.Second)
	if err := c.WaitReady(ctx, 20*time.Second); err != nil { // one leader, every replica agreeing
		t.Errorf("after the old leader resumed: %v", err)
	}
	ps, err := c.Client().Credentials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range ps {
		if p.Name == "after-pause" {
			n++
		}
	}
	if (werr == nil && n != 1) || n > 1 {
		t.Errorf("credential after-pause stored %d times", n)
	}
	log, _ := os.ReadFile(old.Log) // read for the assertion below
	if !strings.Contains(string(log), "campaigning again") {
		t.Errorf("the old leader's log does not say it lost the leadership:\n%s", log)
	}
}

// TestFiveReplicasSurviveTwoLosses: with five replicas, the leader and
// one more killed, writes go on.
func TestFiveReplicasSurviveTwoLosses(t *testing.T) {
	c := startCluster(t, 5)
	ctx := context.Background()
	li, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Replicas[li].Kill()
	c.Replicas[(li+1)%5].Kill()
	start := time.Now()
	cl := c.Client()
	cl.Failover = 30 * time.Second
	if _, err := cl.PutCredential(ctx, api.Credential{Name: "two-lost", Username: "u", Password: "p"}); err != nil {
		st, serr := c.Status(ctx) // for the failure's context
		t.Fatalf("write with 3 of 5 up: %v\nstatus: %+v (%v)", err, st, serr)
	}
	t.Logf("write acknowledged %v after losing two of five (the leader one of them)", time.Since(start).Round(time.Millisecond))
	// The status settles on 5 members, 3 healthy, one leader (each
	// member is asked by its own replica, with a timeout: a busy one
	// may miss a round).
	var st api.ClusterStatus
	healthy := 0
	for deadline := time.Now().Add(20 * time.Second); ; {
		st, err = c.Status(ctx)
		healthy = 0
		for _, m := range st.Members {
			if m.Healthy {
				healthy++
			}
		}
		if err == nil && len(st.Members) == 5 && healthy == 3 && st.Leader != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil || len(st.Members) != 5 || healthy != 3 || st.Leader == "" {
		t.Errorf("status after two losses: %d members, %d healthy, leader %q (%v); want 5, 3 and one", len(st.Members), healthy, st.Leader, err)
	}

	// A replica that lost its data directory may not bootstrap as new
	// into the running cluster: it stops, saying what to do.
	lost := (li + 1) % 5
	r := c.Replicas[lost]
	if err := os.RemoveAll(r.Data); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(lost); err != nil {
		t.Fatal(err)
	}
	if !r.Wait(60 * time.Second) {
		t.Fatal("a replica with an emptied data directory kept running")
	}
	log, _ := os.ReadFile(r.Log) // for the assertion
	if !strings.Contains(string(log), "must be removed and added again") || !strings.Contains(string(log), "loom cluster remove "+r.Name) {
		t.Errorf("the emptied replica's error does not say what to do:\n%s", tail(string(log), 5))
	}
	// Removed and added again, it joins with the flags it was given.
	if err := cl.ClusterRemove(ctx, r.Name); err != nil {
		t.Fatal(err)
	}
	added, err := cl.ClusterAdd(ctx, api.MemberAdd{Name: r.Name, PeerURL: r.Peer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ClusterAdd(ctx, api.MemberAdd{Name: r.Name, PeerURL: r.Peer}); err == nil {
		t.Error("adding a member twice succeeded")
	}
	t.Logf("rejoining with %v", added.Flags)
	if err := c.Rejoin(lost, added.Flags); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := c.Status(ctx)
		ok := false
		for _, m := range st.Members {
			ok = ok || (m.Name == r.Name && m.Healthy && m.Lag < 50)
		}
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the re-added replica did not join: %+v %v\n%s", st, err, tail(readFile(r.Log), 10))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Its token files hold the cluster's tokens.
	if r.Token() != c.Token() {
		t.Errorf("the joined replica's operator token differs from the cluster's")
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p) // for an error message
	return string(b)
}
