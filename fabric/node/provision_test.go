package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
)

func TestTransition(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	pending := api.Node{Phase: api.PhaseRegistered, Mode: api.ModeMaintenance, Profile: "p", Provision: 2, Imaged: 1}
	type out struct {
		Phase          api.Phase
		Imaged, Failed int64
		Reason         string
		Conflict       bool
	}
	for _, tc := range []struct {
		name string
		n    api.Node
		st   api.Status
		want out
	}{
		{"heartbeat changes nothing", pending, api.Status{}, out{Phase: api.PhaseRegistered, Imaged: 1}},
		{"start imaging", pending, api.Status{Phase: api.PhaseImaging, Provision: 2}, out{Phase: api.PhaseImaging, Imaged: 1}},
		{"imaging an old generation", pending, api.Status{Phase: api.PhaseImaging, Provision: 1}, out{Phase: api.PhaseRegistered, Imaged: 1, Conflict: true}},
		{"imaged", with(pending, api.PhaseImaging), api.Status{Phase: api.PhaseImaged, Provision: 2}, out{Phase: api.PhaseImaged, Imaged: 2}},
		{"failed", with(pending, api.PhaseImaging), api.Status{Phase: api.PhaseFailed, Provision: 2, Reason: "sha256 mismatch"}, out{Phase: api.PhaseFailed, Imaged: 1, Failed: 2, Reason: "sha256 mismatch"}},
		{"booting before imaged", pending, api.Status{Phase: api.PhaseBooting}, out{Phase: api.PhaseRegistered, Imaged: 1, Conflict: true}},
		{"booting when imaged", func() api.Node { n := with(pending, api.PhaseImaged); n.Imaged = 2; return n }(), api.Status{Phase: api.PhaseBooting}, out{Phase: api.PhaseBooting, Imaged: 2}},
		{"unreachable maintenance node heard again", with(pending, api.PhaseUnreachable), api.Status{}, out{Phase: api.PhaseRegistered, Imaged: 1}},
		{"unreachable host heard again", func() api.Node { n := with(pending, api.PhaseUnreachable); n.Mode = api.ModeHost; return n }(), api.Status{}, out{Phase: api.PhaseReady, Imaged: 1}},
		{"agents cannot claim Ready", pending, api.Status{Phase: api.PhaseReady}, out{Phase: api.PhaseRegistered, Imaged: 1, Conflict: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Transition(tc.n, tc.st, now)
			got := out{Phase: n.Phase, Imaged: n.Imaged, Failed: n.Failed, Reason: n.Reason, Conflict: errors.Is(err, ErrConflict)}
			if err != nil {
				got.Phase, got.Imaged, got.Failed, got.Reason = tc.n.Phase, tc.n.Imaged, tc.n.Failed, tc.n.Reason
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Transition (-want +got):\n%s", diff)
			}
		})
	}
}

func with(n api.Node, p api.Phase) api.Node { n.Phase = p; return n }

func TestGoalFor(t *testing.T) {
	for _, tc := range []struct {
		n    api.Node
		want api.Action
	}{
		{api.Node{}, api.ActionNone},
		{api.Node{Profile: "p", Provision: 1}, api.ActionProvision},
		{api.Node{Profile: "p", Provision: 1, Imaged: 1}, api.ActionBootHost},
		{api.Node{Profile: "p", Provision: 1, Failed: 1}, api.ActionNone},
		{api.Node{Profile: "p", Provision: 2, Imaged: 1, Failed: 1}, api.ActionProvision},
	} {
		if got := GoalFor(tc.n); got != tc.want {
			t.Errorf("GoalFor(provision %d imaged %d failed %d) = %s, want %s", tc.n.Provision, tc.n.Imaged, tc.n.Failed, got, tc.want)
		}
	}
}

// TestBootChoice: unimaged and unknown nodes boot the maintenance OS; an
// imaged one what its profile says.
func TestBootChoice(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	r := New(Config{CA: testCA, Store: st}, nil)
	for _, p := range []api.Profile{
		{Name: "kexec", Image: "i"},
		{Name: "local", Image: "i", Boot: api.BootLocal},
		{Name: "custom", Image: "i", Boot: api.BootCustom, Kernel: "http://x/k", Initrd: "http://x/i", KernelArgs: "root=/dev/vda1"},
	} {
		p.Default()
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		st.PutProfile(ctx, p)
	}
	for i, tc := range []struct {
		profile         string
		provision, done int64
		want            api.BootChoice
	}{
		{"", 0, 0, api.BootChoice{Kind: api.BootMaintenance}},
		{"local", 2, 1, api.BootChoice{Kind: api.BootMaintenance}}, // reprovisioning
		{"kexec", 1, 1, api.BootChoice{Kind: api.BootKexec}},
		{"local", 1, 1, api.BootChoice{Kind: api.BootLocal}},
		{"custom", 1, 1, api.BootChoice{Kind: api.BootCustom, Kernel: "http://x/k", Initrd: "http://x/i", Args: "root=/dev/vda1"}},
		{"gone", 1, 1, api.BootChoice{Kind: api.BootKexec}},
	} {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		n := api.Node{ID: fmt.Sprintf("n-%d", i), MAC: mac, Phase: api.PhaseReady, Profile: tc.profile, Provision: tc.provision, Imaged: tc.done}
		if err := st.CreateNode(ctx, n, []string{mac}, ""); err != nil {
			t.Fatal(err)
		}
		if got := r.BootChoice(ctx, mac); got != tc.want {
			t.Errorf("profile %q, generation %d imaged %d: %+v, want %+v", tc.profile, tc.provision, tc.done, got, tc.want)
		}
	}
	if got := r.BootChoice(ctx, "52:54:00:ff:ff:ff"); got.Kind != api.BootMaintenance {
		t.Errorf("unknown MAC: %+v", got)
	}
}

func TestProfileBootValidation(t *testing.T) {
	for _, tc := range []struct {
		p    api.Profile
		want string
	}{
		{api.Profile{Name: "a", Image: "i", Boot: "pxe"}, `boot: "pxe"`},
		{api.Profile{Name: "a", Image: "i", Boot: api.BootCustom}, "kernel: required"},
		{api.Profile{Name: "a", Image: "i", Boot: api.BootCustom, Kernel: "tftp://x/k"}, "kernel: \"tftp://x/k\": want an http or https URL"},
		{api.Profile{Name: "a", Image: "i", Boot: api.BootCustom, Kernel: "http://x/k", Initrd: "/i"}, "initrd:"},
		{api.Profile{Name: "a", Image: "i", Boot: api.BootLocal, Kernel: "http://x/k"}, "only with boot custom"},
	} {
		tc.p.Default()
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.p, err, tc.want)
		}
	}
}

// TestDecommissionTransitions: the wipe goal, the agent's reports, and
// what a decommissioned node boots.
func TestDecommissionTransitions(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	n := api.Node{Phase: api.PhaseRegistered, Mode: api.ModeMaintenance, Profile: "p", Provision: 1, Imaged: 1}
	if _, err := Transition(n, api.Status{Phase: api.PhaseWiping}, now); !errors.Is(err, ErrConflict) {
		t.Errorf("wiping without a decommission: %v, want a conflict", err)
	}
	n.Decommission = true
	if g := GoalFor(n); g != api.ActionWipe {
		t.Errorf("goal of a node to decommission: %s", g)
	}
	n, err := Transition(n, api.Status{Phase: api.PhaseWiping}, now)
	if err != nil || n.Phase != api.PhaseWiping {
		t.Fatalf("wiping: %s %v", n.Phase, err)
	}
	done, err := Transition(n, api.Status{Phase: api.PhaseDecommissioned, Reason: "vda: zeroed 8.0 GiB"}, now)
	if err != nil || done.Phase != api.PhaseDecommissioned || done.Wiped != "vda: zeroed 8.0 GiB" || GoalFor(done) != api.ActionNone {
		t.Errorf("decommissioned: %+v %v", done, err)
	}
	failed, err := Transition(n, api.Status{Phase: api.PhaseFailed, Reason: "nvme0n1: I/O error"}, now)
	if err != nil || failed.Phase != api.PhaseFailed || failed.Reason != "decommission: nvme0n1: I/O error" || GoalFor(failed) != api.ActionNone {
		t.Errorf("failed wipe: %+v %v", failed, err)
	}
	if !heartbeating(api.PhaseWiping) || heartbeating(api.PhaseDecommissioned) {
		t.Error("Wiping nodes heartbeat; decommissioned ones are off")
	}
}

type imagings struct {
	bytes  []uint64
	took   []time.Duration
	causes []string
}

func (o *imagings) Imaged(b uint64, d time.Duration) {
	o.bytes, o.took = append(o.bytes, b), append(o.took, d)
}
func (o *imagings) ImagingFailed(c string) { o.causes = append(o.causes, c) }

// TestObserver: the observer hears of an imaging's end once, with its
// data bytes and time, and of a failure with its cause (an unknown cause
// as "other").
func TestObserver(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	var o imagings
	r := New(Config{CA: testCA, Store: st, Now: func() time.Time { return now }, Observer: &o}, nil)
	for i, n := range []api.Node{
		{ID: "ok", MAC: "52:54:00:00:02:01", Phase: api.PhaseRegistered, Provision: 1},
		{ID: "bad", MAC: "52:54:00:00:02:02", Phase: api.PhaseRegistered, Provision: 1},
		{ID: "odd", MAC: "52:54:00:00:02:03", Phase: api.PhaseRegistered, Provision: 1},
	} {
		if err := st.CreateNode(ctx, n, []string{n.MAC}, ""); err != nil {
			t.Fatal(i, err)
		}
	}
	report := func(id string, s api.Status) {
		t.Helper()
		s.Provision = 1
		if err := r.Report(ctx, id, s); err != nil {
			t.Fatalf("%s: %+v: %v", id, s, err)
		}
	}
	for _, id := range []string{"ok", "bad", "odd"} {
		report(id, api.Status{Phase: api.PhaseImaging, Progress: &api.Progress{Total: 5000}})
	}
	now = now.Add(90 * time.Second)
	report("ok", api.Status{Phase: api.PhaseImaging, Progress: &api.Progress{Bytes: 5000, Total: 5000}})
	report("ok", api.Status{Phase: api.PhaseImaged})
	report("ok", api.Status{Phase: api.PhaseImaged}) // repeated: counted once
	report("bad", api.Status{Phase: api.PhaseFailed, Reason: "sha256 mismatch", Cause: api.CauseVerify})
	report("odd", api.Status{Phase: api.PhaseFailed, Reason: "?", Cause: "cosmic rays"})
	want := imagings{bytes: []uint64{5000}, took: []time.Duration{90 * time.Second}, causes: []string{api.CauseVerify, api.CauseOther}}
	if diff := cmp.Diff(want, o, cmp.AllowUnexported(imagings{})); diff != "" {
		t.Errorf("observed (-want +got):\n%s", diff)
	}
}
