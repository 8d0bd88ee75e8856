package service

import (
	"context"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// passes counts the controller's planning passes over a real store.
type passes struct {
	*store.Store
	n int
}

func (p *passes) ChangeVMs(ctx context.Context, fn func([]api.Node, []api.VM) (store.VMChange, error)) (store.VMChange, error) {
	p.n++
	return p.Store.ChangeVMs(ctx, fn)
}

// A pass that finds nothing to do is not repeated until something is
// written — unless time alone can change the answer (a host Unreachable
// but not yet lost), and then the loss is acted on when it is due.
func TestControllerSettles(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := &passes{Store: st}
	now := time.Unix(1e9, 0)
	c := NewController(p, Policy{LostAfter: time.Minute, MaxLost: 1}, nil)
	c.now = func() time.Time { return now }
	for _, id := range []string{"h1", "h2"} {
		if err := st.CreateNode(ctx, host(id, id, 4, 4096), nil, ""); err != nil {
			t.Fatal(err)
		}
	}
	s := svc
	s.Roles = []api.ServiceRole{svc.Roles[0]}
	s.Roles[0].Instances = 2
	if err := st.CreateService(ctx, s); err != nil {
		t.Fatal(err)
	}
	reconcile := func() {
		t.Helper()
		if err := c.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	reconcile() // places 2
	reconcile() // finds nothing: settled
	before := p.n
	reconcile()
	reconcile()
	if p.n != before {
		t.Fatalf("%d passes with nothing written since the last one found nothing", p.n-before)
	}
	if vs, _ := st.VMs(ctx); len(vs) != 2 {
		t.Fatalf("%d VMs, want 2", len(vs))
	}
	// A write: the next reconcile looks again.
	if _, err := st.UpdateService(ctx, s.Name, func(s *api.Service) error { s.Roles[0].Instances = 3; return nil }); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if vs, _ := st.VMs(ctx); len(vs) != 3 {
		t.Fatalf("after scaling to 3: %d VMs", len(vs))
	}
	reconcile()
	// h1 goes Unreachable: passes go on while its loss is pending, and
	// its instances are replaced once it is due, with no write between.
	if _, err := st.UpdateNode(ctx, "h1", func(n *api.Node) error {
		n.SetPhase(api.PhaseUnreachable, now, "silent")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reconcile()
	before = p.n
	reconcile()
	if p.n == before {
		t.Fatal("no pass while a host's loss was pending")
	}
	now = now.Add(2 * time.Minute)
	reconcile()
	vs, _ := st.VMs(ctx)
	onH2 := 0
	for _, v := range vs {
		if v.Desired != api.VMDeleted && v.Node == "h2" {
			onH2++
		}
	}
	if onH2 != 3 {
		t.Errorf("after h1 was lost: %d live instances on h2, want 3: %+v", onH2, vs)
	}
}
