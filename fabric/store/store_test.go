package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{DataDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNodesAndLeasesSurviveRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	n := api.Node{ID: "n-1", Phase: api.PhaseDiscovered, MAC: "52:54:00:00:00:01", Created: now, PhaseChanged: now}
	if err := s.CreateNode(ctx, n, []string{n.MAC}, "uuid-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateNode(ctx, api.Node{ID: "n-2"}, []string{n.MAC}, ""); !errors.Is(err, ErrExists) {
		t.Errorf("CreateNode with a claimed MAC = %v, want ErrExists", err)
	}
	if _, err := s.Node(ctx, "n-2"); !IsNotFound(err) {
		t.Errorf("a failed create left node n-2 behind (err %v)", err)
	}
	if _, err := s.UpdateNode(ctx, "n-1", func(n *api.Node) error { n.Phase = api.PhaseRegistered; return nil }); err != nil {
		t.Fatal(err)
	}
	leases := []api.Lease{{MAC: "52:54:00:00:00:01", IP: "10.0.0.100", Expires: now}, {MAC: "52:54:00:00:00:02", IP: "10.0.0.101", Expires: now}}
	if err := s.CommitLeases(ctx, leases, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitLeases(ctx, nil, []string{"52:54:00:00:00:02"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitLeases(ctx, make([]api.Lease, MaxTxnOps+1), nil); err == nil {
		t.Errorf("CommitLeases of %d leases succeeded, want an error", MaxTxnOps+1)
	}
	s.Close()

	s = open(t, dir)
	defer s.Close()
	got, err := s.Node(ctx, "n-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != api.PhaseRegistered {
		t.Errorf("after restart node n-1 phase = %s, want Registered", got.Phase)
	}
	for k, f := range map[string]func(context.Context, string) (string, error){"52:54:00:00:00:01": s.NodeIDByMAC, "uuid-1": s.NodeIDByUUID} {
		if id, err := f(ctx, k); id != "n-1" || err != nil {
			t.Errorf("index %s = %q, %v; want n-1", k, id, err)
		}
	}
	// The batched lookup, over more MACs than one transaction holds.
	macs := []string{"52:54:00:00:00:01"}
	for i := range MaxTxnOps + 5 {
		macs = append(macs, fmt.Sprintf("52:54:01:00:%02x:%02x", i>>8, i&0xff))
	}
	macs = append(macs, "52:54:00:00:00:01")
	ids, err := s.NodeIDsByMAC(ctx, macs)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"52:54:00:00:00:01": "n-1"}, ids); diff != "" {
		t.Errorf("NodeIDsByMAC (-want +got):\n%s", diff)
	}
	gotLeases, err := s.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(leases[:1], gotLeases); diff != "" {
		t.Errorf("leases after restart (-want +got):\n%s", diff)
	}
}
