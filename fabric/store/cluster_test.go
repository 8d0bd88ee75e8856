package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

// TestFencedWrites: while the store is fenced on a leader key, its writes
// land only while that key stands at its revision; once it is gone (a
// deposed leader), every kind of write fails with ErrNotLeader and
// changes nothing, and a compare that fails inside the fence is still
// told apart (ErrExists, not ErrNotLeader).
func TestFencedWrites(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	key := leaderPrefix + "test"
	r, err := s.cli.Put(ctx, key, `{"name":"a"}`)
	if err != nil {
		t.Fatal(err)
	}
	s.setFence(&fence{cmp: clientv3.Compare(clientv3.CreateRevision(key), "=", r.Header.Revision)})

	if err := s.PutProfile(ctx, api.Profile{Name: "p", Image: "i"}); err != nil {
		t.Fatalf("leader's put: %v", err)
	}
	n := api.Node{ID: "n-1", MAC: "52:54:00:00:00:01"}
	if err := s.CreateNode(ctx, n, []string{n.MAC}, ""); err != nil {
		t.Fatalf("leader's guarded create: %v", err)
	}
	if err := s.CreateNode(ctx, api.Node{ID: "n-2"}, []string{n.MAC}, ""); !errors.Is(err, ErrExists) {
		t.Errorf("create of a claimed MAC under the fence = %v, want ErrExists", err)
	}
	if _, err := s.UpdateNode(ctx, "n-1", func(n *api.Node) error { n.Rack = "r1"; return nil }); err != nil {
		t.Fatalf("leader's update: %v", err)
	}

	// Deposed: the leader key is gone (its lease expired).
	if _, err := s.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.PutProfile(ctx, api.Profile{Name: "p2", Image: "i"}); !errors.Is(err, ErrNotLeader) {
		t.Errorf("deposed put = %v, want ErrNotLeader", err)
	}
	if err := s.DeleteProfile(ctx, "p"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("deposed delete = %v, want ErrNotLeader", err)
	}
	if err := s.CreateNode(ctx, api.Node{ID: "n-3"}, []string{"52:54:00:00:00:03"}, ""); !errors.Is(err, ErrNotLeader) {
		t.Errorf("deposed guarded create = %v, want ErrNotLeader", err)
	}
	if _, err := s.UpdateNode(ctx, "n-1", func(n *api.Node) error { n.Rack = "r2"; return nil }); !errors.Is(err, ErrNotLeader) {
		t.Errorf("deposed update = %v, want ErrNotLeader", err)
	}
	if _, err := s.Profile(ctx, "p"); err != nil {
		t.Errorf("the deposed delete removed profile p: %v", err)
	}
	if got, err := s.Node(ctx, "n-1"); err != nil || got.Rack != "r1" {
		t.Errorf("node after the deposed update: rack %q, err %v; want r1", got.Rack, err)
	}
	if _, err := s.Node(ctx, "n-3"); !IsNotFound(err) {
		t.Errorf("the deposed create left n-3: %v", err)
	}
	// Writes any replica may make still land.
	if err := s.CreateNode(AnyReplica(ctx), api.Node{ID: "n-4"}, []string{"52:54:00:00:00:04"}, ""); err != nil {
		t.Errorf("AnyReplica create: %v", err)
	}
	if err := s.CommitLeases(ctx, []api.Lease{{MAC: "52:54:00:00:00:04"}}, nil); err != nil {
		t.Errorf("lease commit: %v", err)
	}
	// A follower is refused without a round trip.
	s.setFence(&fence{never: true})
	if err := s.PutProfile(ctx, api.Profile{Name: "p3", Image: "i"}); !errors.Is(err, ErrNotLeader) {
		t.Errorf("follower's put = %v, want ErrNotLeader", err)
	}
}

// TestLeadHandsOver: two stores on one etcd campaign; one leads (its
// work runs, the other's writes are refused); when it stops, the other
// takes over within a few seconds and the first's writes are refused.
func TestLeadHandsOver(t *testing.T) {
	ctx := context.Background()
	a := open(t, t.TempDir())
	defer a.Close()
	b, err := Open(ctx, Config{Endpoints: []string{a.etcd.Config().AdvertiseClientUrls[0].String()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	log := slog.New(slog.DiscardHandler)
	var leading atomic.Int32
	work := func(name string, who *atomic.Value) func(context.Context) error {
		return func(ctx context.Context) error {
			if leading.Add(1) != 1 {
				t.Errorf("%s leads while another does", name)
			}
			who.Store(name)
			<-ctx.Done()
			leading.Add(-1)
			return nil
		}
	}
	var who atomic.Value
	actx, stopA := context.WithCancel(ctx)
	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		_ = a.Lead(actx, api.Replica{Name: "a", API: "http://a"}, time.Second, work("a", &who), log)
	}()
	waitFor(t, func() bool { return who.Load() == "a" })
	go func() { _ = b.Lead(bctx, api.Replica{Name: "b", API: "http://b"}, time.Second, work("b", &who), log) }()
	waitFor(t, func() bool { l, ok := b.Leader(); return ok && l.Name == "a" })
	waitFor(t, func() bool { rs, err := b.Replicas(ctx); return err == nil && len(rs) == 2 })
	if err := b.PutProfile(ctx, api.Profile{Name: "x", Image: "i"}); !errors.Is(err, ErrNotLeader) {
		t.Errorf("follower's write = %v, want ErrNotLeader", err)
	}
	if err := a.PutProfile(ctx, api.Profile{Name: "x", Image: "i"}); err != nil {
		t.Errorf("leader's write: %v", err)
	}
	start := time.Now()
	stopA()
	<-aDone
	waitFor(t, func() bool { return who.Load() == "b" })
	t.Logf("handover in %v", time.Since(start))
	if l, ok := a.Leader(); ok && l.Name != "b" {
		waitFor(t, func() bool { l, ok := a.Leader(); return ok && l.Name == "b" })
	}
	if err := a.PutProfile(ctx, api.Profile{Name: "y", Image: "i"}); !errors.Is(err, ErrNotLeader) {
		t.Errorf("former leader's write = %v, want ErrNotLeader", err)
	}
	if err := b.PutProfile(ctx, api.Profile{Name: "y", Image: "i"}); err != nil {
		t.Errorf("new leader's write: %v", err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNeedsDefrag(t *testing.T) {
	for _, c := range []struct {
		size, inUse int64
		want        bool
	}{{1 << 20, 0, false}, {100 << 20, 90 << 20, false}, {100 << 20, 40 << 20, true}, {64 << 20, 32<<20 - 1, true}} {
		if got := NeedsDefrag(c.size, c.inUse); got != c.want {
			t.Errorf("NeedsDefrag(%d, %d) = %v, want %v", c.size, c.inUse, got, c.want)
		}
	}
}

// TestClaimLeases: an address is claimed by one MAC; a second MAC's
// lease on it is a conflict naming the holder; a renewal, a displacement
// of the holder (Prev), a lease stored before claims existed and a claim
// whose holder moved on all land; a decline frees the claim.
func TestClaimLeases(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	l := func(mac, ip string) api.Lease { return api.Lease{MAC: mac, IP: ip} }
	const m1, m2, m3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
	claim := func(w LeaseWrite) []LeaseConflict {
		t.Helper()
		cs, err := s.ClaimLeases(ctx, []LeaseWrite{w}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	if cs := claim(LeaseWrite{Lease: l(m1, "10.0.0.100")}); cs != nil {
		t.Fatalf("first claim: %v", cs)
	}
	if cs := claim(LeaseWrite{Lease: l(m2, "10.0.0.100")}); len(cs) != 1 || cs[0].Holder != m1 {
		t.Errorf("second MAC on a claimed address: %v, want a conflict held by %s", cs, m1)
	}
	if got, _ := s.Lease(ctx, m2); got.IP != "" {
		t.Errorf("the conflicting lease was stored: %+v", got)
	}
	if cs := claim(LeaseWrite{Lease: l(m1, "10.0.0.100"), Prev: m1}); cs != nil {
		t.Errorf("renewal: %v", cs)
	}
	if cs := claim(LeaseWrite{Lease: l(m1, "10.0.0.100")}); cs != nil {
		t.Errorf("claim of an address already the MAC's: %v", cs)
	}
	// m1's lease ran out; m2 displaces it (the server knew m1 held it).
	if cs, err := s.ClaimLeases(ctx, []LeaseWrite{{Lease: l(m2, "10.0.0.100"), Prev: m1}}, []api.Lease{{MAC: m1}}); err != nil || cs != nil {
		t.Errorf("displacement: %v %v", cs, err)
	}
	// m2 moves to another address: its old claim is stale, m3 takes it
	// although its server thinks the address free.
	if cs := claim(LeaseWrite{Lease: l(m2, "10.0.0.101"), Prev: ""}); cs != nil {
		t.Fatalf("m2's new address: %v", cs)
	}
	if cs := claim(LeaseWrite{Lease: l(m3, "10.0.0.100")}); cs != nil {
		t.Errorf("claim of an address whose holder moved on: %v", cs)
	}
	// A lease stored before claims existed renews.
	if _, err := s.cli.Put(ctx, s.leases().key("52:54:00:00:00:09"), `{"mac":"52:54:00:00:00:09","ip":"10.0.0.109"}`); err != nil {
		t.Fatal(err)
	}
	if cs := claim(LeaseWrite{Lease: l("52:54:00:00:00:09", "10.0.0.109"), Prev: "52:54:00:00:00:09"}); cs != nil {
		t.Errorf("renewal of a lease without a claim: %v", cs)
	}
	// Declined: lease and claim go.
	if _, err := s.ClaimLeases(ctx, nil, []api.Lease{{MAC: m3, IP: "10.0.0.100"}}); err != nil {
		t.Fatal(err)
	}
	if cs := claim(LeaseWrite{Lease: l(m1, "10.0.0.100")}); cs != nil {
		t.Errorf("claim after a decline freed the address: %v", cs)
	}
	// A batch all as believed lands whole (the flat transaction); one
	// with a claim not as believed is a conflict of its own, the others
	// landing beside it.
	const m4, m5, m6 = "52:54:00:00:00:04", "52:54:00:00:00:05", "52:54:00:00:00:06"
	batch := func(ws ...LeaseWrite) []LeaseConflict {
		t.Helper()
		cs, err := s.ClaimLeases(ctx, ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	if cs := batch(LeaseWrite{Lease: l(m4, "10.0.0.104")}, LeaseWrite{Lease: l(m5, "10.0.0.105")}, LeaseWrite{Lease: l(m1, "10.0.0.100"), Prev: m1}); cs != nil {
		t.Errorf("a batch as believed: %v", cs)
	}
	cs := batch(LeaseWrite{Lease: l(m4, "10.0.0.104"), Prev: m4}, LeaseWrite{Lease: l(m6, "10.0.0.105")}, LeaseWrite{Lease: l(m1, "10.0.0.100"), Prev: m1})
	if len(cs) != 1 || cs[0].Index != 1 || cs[0].Holder != m5 {
		t.Errorf("a batch with a claimed address: %+v, want one conflict at index 1 held by %s", cs, m5)
	}
	for mac, ip := range map[string]string{m4: "10.0.0.104", m5: "10.0.0.105", m1: "10.0.0.100"} {
		if got, err := s.Lease(ctx, mac); err != nil || got.IP != ip {
			t.Errorf("after the batches %s holds %+v (%v), want %s", mac, got, err, ip)
		}
		if r, err := s.cli.Get(ctx, leaseIPKey(ip)); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != mac {
			t.Errorf("after the batches the claim of %s is %v (%v), want %s", ip, r, err, mac)
		}
	}
	if got, _ := s.Lease(ctx, m6); got.IP != "" {
		t.Errorf("the conflicting lease of the batch was stored: %+v", got)
	}
}

// TestAuditTrim: the audit log keeps the newest records up to its
// bound, none older than its age, oldest removed first.
func TestAuditTrim(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i := range 30 {
		at := now.Add(time.Duration(i-30) * time.Minute)
		if i < 5 {
			at = now.Add(-48 * time.Hour) // too old
		}
		if err := s.AppendAudit(ctx, api.AuditRecord{Time: at, Who: fmt.Sprint(i), Method: "POST", Path: "/x", Status: 200}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.TrimAudit(ctx, 20, 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.Audit(ctx, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != 10 || len(recs) != 20 || recs[0].Who != "10" || recs[19].Who != "29" {
		t.Errorf("after trimming to 20: removed %d, %d left, from %q to %q; want 10 removed, 10..29 left", n, len(recs), recs[0].Who, recs[len(recs)-1].Who)
	}
	if n, err := s.TrimAudit(ctx, 100, time.Hour, now); err != nil || n != 0 {
		t.Errorf("trimming within bounds removed %d (%v)", n, err)
	}
	since, err := s.Audit(ctx, now.Add(-5*time.Minute), 3)
	if err != nil || len(since) != 3 || since[0].Who != "25" {
		t.Errorf("Audit since 5 min, limit 3 = %+v, %v; want 25, 26, 27", since, err)
	}
}
