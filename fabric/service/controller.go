package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/loomfabric/loom/agent/retry"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
	"github.com/loomfabric/loom/fabric/vms"
)

// Store is what the controller needs of the store; *store.Store has it.
type Store interface {
	// Revision is the store's current revision: it moves with every write.
	Revision(ctx context.Context) (int64, error)
	Services(ctx context.Context) ([]api.Service, error)
	VMs(ctx context.Context) ([]api.VM, error)
	// VMsWhere lists the VMs keep accepts (keep must not change them).
	VMsWhere(ctx context.Context, keep func(*api.VM) bool) ([]api.VM, error)
	ChangeVMs(ctx context.Context, fn func([]api.Node, []api.VM) (store.VMChange, error)) (store.VMChange, error)
	UpdateService(ctx context.Context, name string, fn func(*api.Service) error) (api.Service, error)
}

// Controller keeps each role's instance count: level-triggered, it
// compares what the services want with the VMs that exist, on every Kick
// and at a steady interval, and writes the difference in one transaction.
type Controller struct {
	st     Store
	log    *slog.Logger
	now    func() time.Time
	kick   chan struct{}
	policy Policy
	held   bool // the last pass held back evictions (logged once)
	// walking: an upgrade was in progress at the last pass.
	walking bool
	// settled is the store revision at the start of the last pass that
	// found nothing to do and nothing that time alone could change (0 if
	// none): until something is written, a pass would find the same.
	settled int64
	// backlog: the last pass left work for the next (a plan bigger than
	// a pass); pace says how long to wait first.
	backlog bool
	pace    *Pacer
}

// WalkInterval is how often the controller looks while an upgrade walks.
const WalkInterval = 250 * time.Millisecond

// Healing defaults.
const (
	DefaultLostAfter   = 2 * time.Minute
	DefaultMaxLost     = 0.34
	DefaultMaxRestarts = 5
)

// Policy says when the controller gives up on a host.
type Policy struct {
	// LostAfter: a host Unreachable this long is Lost, and its instances
	// are replaced on other hosts.
	LostAfter time.Duration
	// MaxLost caps evictions: when more than this fraction of the hosts
	// (Ready or Unreachable nodes) are Lost at once, it looks like a
	// network split or a sick controller rather than failed hosts, and
	// nothing is evicted until the fraction falls (instances already
	// replaced stay replaced).
	MaxLost float64
	// MaxRestarts: an instance that crashed this many times is replaced
	// on another host (its host restarts it in place until then).
	MaxRestarts int
}

// LostNodes are the hosts whose instances are to be replaced at now, and
// whether the MaxLost cap held evictions back.
func LostNodes(nodes []api.Node, now time.Time, p Policy) (lost map[string]bool, held bool) {
	lost = map[string]bool{}
	hosts := 0
	for _, n := range nodes {
		switch n.Phase {
		case api.PhaseReady:
			hosts++
		case api.PhaseUnreachable:
			hosts++
			if now.Sub(n.PhaseChanged) >= p.LostAfter {
				lost[n.ID] = true
			}
		}
	}
	if len(lost) > 0 && float64(len(lost)) > p.MaxLost*float64(hosts) {
		return map[string]bool{}, true
	}
	return lost, false
}

// NewController returns a controller; Run starts it. A zero policy field
// takes its default (DefaultLostAfter, DefaultMaxLost).
func NewController(st Store, p Policy, log *slog.Logger) *Controller {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p.LostAfter = cmp.Or(p.LostAfter, DefaultLostAfter)
	p.MaxLost = cmp.Or(p.MaxLost, DefaultMaxLost)
	p.MaxRestarts = cmp.Or(p.MaxRestarts, DefaultMaxRestarts)
	return &Controller{st: st, log: log, now: time.Now, kick: make(chan struct{}, 1), policy: p}
}

// Pace makes the controller wait as long as p says (see Pacer) between
// the transactions of a big change and between the passes of a backlog;
// p is fed the hosts' heartbeats.
func (c *Controller) Pace(p *Pacer) { c.pace = p }

// pacedChunk is how many instances a transaction of a pass writes: each
// wakes its host, which fetches its goal at once, so a transaction is a
// burst of work for loomd that heartbeats queue behind; the pacer waits
// between transactions.
const pacedChunk = 128

// pause waits, between two transactions of a big change, as long as the
// pacer says.
func (c *Controller) pause(ctx context.Context) error {
	if d := c.pace.Next(); d > 0 {
		return retry.Sleep(ctx, d)
	}
	return nil
}

// Kick asks for a pass soon (after a deploy, scale or delete).
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx ends: at once, on each Kick, and every interval
// (which catches nodes that came or went and room that freed up).
func (c *Controller) Run(ctx context.Context, interval time.Duration) error {
	for {
		if err := c.Reconcile(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("services: reconcile", "err", err)
		}
		wait := interval
		if c.walking {
			wait = min(interval, WalkInterval) // an upgrade waits on hosts' reports
		}
		if c.backlog && c.pause(ctx) != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-time.After(wait):
		}
	}
}

// Reconcile makes one pass over every service.
func (c *Controller) Reconcile(ctx context.Context) error {
	rev, err := c.st.Revision(ctx)
	if err != nil {
		return err
	}
	if rev == c.settled {
		return nil
	}
	c.settled = 0
	c.walking, c.backlog = false, false
	svcs, err := c.st.Services(ctx)
	if err != nil {
		return err
	}
	if len(svcs) == 0 {
		// The common case on a fabric without services: nothing to do
		// unless instances of a deleted service are left.
		left, err := c.st.VMsWhere(ctx, func(v *api.VM) bool { return v.Service != "" && v.Desired != api.VMDeleted })
		if err != nil {
			return err
		}
		if len(left) == 0 {
			c.settled = rev
			return nil
		}
	}
	now := c.now().UTC()
	held, more, waiting := false, false, false
	var walked [][2]api.Service // services whose upgrade moved on: before, after
	planned := 0
	ch, err := c.st.ChangeVMs(ctx, func(nodes []api.Node, vs []api.VM) (store.VMChange, error) {
		var lost map[string]bool
		lost, held = LostNodes(nodes, now, c.policy)
		// A host Unreachable but not yet lost is lost later with no write.
		waiting = slices.ContainsFunc(nodes, func(n api.Node) bool { return n.Phase == api.PhaseUnreachable && !lost[n.ID] })
		var steps []api.VM
		walked, steps = c.walks(svcs, vs, now)
		if len(steps) > 0 {
			vs = slices.Clone(vs)
			for _, p := range steps {
				vs[slices.IndexFunc(vs, func(v api.VM) bool { return v.ID == p.ID })] = p
			}
		}
		ch, left := plan(svcs, nodes, vs, lost, Sick(vs, c.policy.MaxRestarts), now, vms.NewID, maxChanges)
		// Plan's writes of a VM start from the stepped one: they win.
		for _, p := range steps {
			if !slices.ContainsFunc(ch.Put, func(v api.VM) bool { return v.ID == p.ID }) && !slices.Contains(ch.Delete, p.ID) {
				ch.Put = append(ch.Put, p)
			}
		}
		ch, more = limit(ch, steps, maxChanges)
		more = more || left
		planned = len(ch.Put) + len(ch.Delete)
		ch.Between, ch.Chunk = c.pause, pacedChunk
		return ch, nil
	})
	if err != nil {
		return err
	}
	if len(ch.Put)+len(ch.Delete) < planned {
		// A big change met a conflict part way (ChangeVMs wrote a prefix):
		// the walks' VMs may be among the rest, so they wait for the
		// next pass, which plans what is left from a fresh view.
		walked, more = nil, true
	}
	for _, w := range walked {
		if err := c.saveWalk(ctx, w[0], w[1]); err != nil {
			c.log.Warn("services: upgrade walk", "service", w[0].Name, "err", err)
		}
	}
	if len(ch.Put) > 0 || len(ch.Delete) > 0 {
		c.log.Info("services: reconciled", "written", len(ch.Put), "forgotten", len(ch.Delete), "more", more)
	}
	if more {
		c.backlog = true
		c.Kick() // the rest of the plan, next (once the pacer allows)
	}
	if len(ch.Put) == 0 && len(ch.Delete) == 0 && len(walked) == 0 && !more && !waiting && !held && !c.walking {
		c.settled = rev
	}
	if held && !c.held {
		c.log.Warn("services: more hosts lost at once than the cap allows; evicting nothing until some come back (network split or a sick controller?)", "max_fraction", c.policy.MaxLost)
	}
	c.held = held
	return nil
}

// maxChanges bounds the VMs one pass writes (in transactions of at most
// store.MaxTxnOps operations: a VM, and the bump of its node's goal), so
// a bigger plan — a thousand services deployed at once, a rack lost — is
// written over several passes, back to back. Each pass reads and plans
// the whole fleet, so a pass does a good share of work: 4,000 instances
// of a 100,000-instance deploy (25 passes, not 200).
const maxChanges = 4000

// limit keeps at most max of ch's writes: every VM of an upgrade step
// (saveWalk counts on them being written), then the rest in Plan's order
// (a lost instance's removal before its replacement); more says some were
// left for the next pass.
func limit(ch store.VMChange, steps []api.VM, max int) (store.VMChange, bool) {
	if len(ch.Put)+len(ch.Delete) <= max {
		return ch, false
	}
	stepped := map[string]bool{}
	for _, p := range steps {
		stepped[p.ID] = true
	}
	var out store.VMChange
	for _, v := range ch.Put {
		if stepped[v.ID] {
			out.Put = append(out.Put, v)
		}
	}
	for _, v := range ch.Put {
		if !stepped[v.ID] && len(out.Put) < max {
			out.Put = append(out.Put, v)
		}
	}
	for _, id := range ch.Delete {
		if len(out.Put)+len(out.Delete) < max {
			out.Delete = append(out.Delete, id)
		}
	}
	return out, true
}

// errStale: the service changed between the walk's read and its write.
var errStale = errors.New("the service changed meanwhile")

// walks steps every upgrade in progress (Step): the services whose walk
// moved on (before, after), and the VMs to write for them. It notes that
// a walk is going (Run then looks more often).
func (c *Controller) walks(svcs []api.Service, vs []api.VM, now time.Time) ([][2]api.Service, []api.VM) {
	var walked [][2]api.Service
	var puts []api.VM
	for _, svc := range svcs {
		if svc.Walk == nil || !svc.Walk.State.Active() {
			continue
		}
		c.walking = true
		next, p := Step(svc, vs, now)
		puts = append(puts, p...)
		if next.Walk.Seq != svc.Walk.Seq {
			walked = append(walked, [2]api.Service{svc, next})
		}
	}
	return walked, puts
}

// saveWalk writes a walk that moved on, compare-and-swap on its Seq, after
// its VMs were written (in the pass's one guarded transaction): writing
// the VMs twice is harmless (Step finds them done), so a crash between the
// two writes loses nothing.
func (c *Controller) saveWalk(ctx context.Context, svc, next api.Service) error {
	_, err := c.st.UpdateService(ctx, svc.Name, func(cur *api.Service) error {
		if cur.Walk == nil || cur.Walk.Seq != svc.Walk.Seq {
			return errStale
		}
		cur.Walk = next.Walk
		for i := range cur.Roles { // a rollback's versions; counts stay as scaled
			if r, ok := next.Role(cur.Roles[i].Name); ok {
				copyVersion(&cur.Roles[i], r)
			}
		}
		return nil
	})
	if errors.Is(err, errStale) {
		c.Kick() // read again
		return nil
	}
	if err == nil && next.Walk.State != svc.Walk.State {
		c.log.Info("services: upgrade", "service", svc.Name, "state", next.Walk.State, "reason", next.Walk.Reason)
	}
	return err
}

// Plan is the controller's decision, pure: what to write so that every
// role of svcs has its instance count. It
//
//   - replaces the instances of lost hosts (LostNodes): each is marked
//     deleted with the reason and counts no more, so the role gets a new
//     one on a Ready host;
//   - places instances left Pending for want of room, where room is now;
//   - adds instances a role lacks (Schedule says where; with no room they
//     are kept Pending with the reason);
//   - removes the surplus of a role scaled down (surplus says which, so
//     that what is left stays spread), and every instance whose service
//     or role is gone. A placed instance is
//     marked deleted (its host stops it, then the fabric forgets it); an
//     unplaced one is forgotten at once.
func Plan(svcs []api.Service, nodes []api.Node, vs []api.VM, lost, sick map[string]bool, now time.Time, newID func() string) store.VMChange {
	ch, _ := plan(svcs, nodes, vs, lost, sick, now, newID, math.MaxInt)
	return ch
}

// plan is Plan placing at most budget instances (new ones and Pending
// ones): a fleet-wide deploy is planned, as it is written, a pass at a
// time. more says some were left.
func plan(svcs []api.Service, nodes []api.Node, vs []api.VM, lost, sick map[string]bool, now time.Time, newID func() string, budget int) (ch store.VMChange, more bool) {
	live := slices.Clone(vs) // what exists, with this plan's changes
	pos := make(map[string]int, len(live))
	byRole := map[[2]string][]int{} // a role's VMs: their places in live
	for i, v := range live {
		pos[v.ID] = i
		if v.Service != "" {
			byRole[[2]string{v.Service, v.Role}] = append(byRole[[2]string{v.Service, v.Role}], i)
		}
	}
	room := newPlacer(nodes, live)
	set := func(v api.VM) {
		ch.Put = append(ch.Put, v)
		if i, ok := pos[v.ID]; ok {
			room.take(live[i], -1)
			live[i] = v
			room.take(v, 1)
			return
		}
		pos[v.ID] = len(live)
		live = append(live, v)
		room.take(v, 1)
		if v.Service != "" {
			byRole[[2]string{v.Service, v.Role}] = append(byRole[[2]string{v.Service, v.Role}], len(live)-1)
		}
	}
	remove := func(v api.VM) {
		if v.Node == "" {
			ch.Delete = append(ch.Delete, v.ID)
			live[pos[v.ID]].Desired = api.VMDeleted // forgotten: counted nowhere
			return
		}
		v.Desired = api.VMDeleted
		set(v)
	}
	// mineOf are a role's instances that are not being deleted.
	mineOf := func(svc, role string) []api.VM {
		var out []api.VM
		for _, i := range byRole[[2]string{svc, role}] {
			if live[i].Desired != api.VMDeleted {
				out = append(out, live[i])
			}
		}
		return out
	}
	placing := func(n int) int { // how many of n the budget allows
		if n > budget {
			more = true
		}
		n = min(n, budget)
		budget -= n
		return n
	}
	domain := map[string]string{}
	for _, n := range nodes {
		domain[n.ID] = FaultDomain(n)
	}
	wanted := map[[2]string]bool{}
	for _, svc := range svcs {
		for _, r := range svc.Roles {
			wanted[[2]string{svc.Name, r.Name}] = true
			mine := mineOf(svc.Name, r.Name)
			avoid := map[string]bool{} // hosts where an instance kept crashing
			for _, v := range mine {
				switch {
				case lost[v.Node]:
					v.Reason = "its host " + v.Node + " is lost (Unreachable too long): replaced elsewhere"
					remove(v)
				case sick[v.ID]:
					v.Reason = fmt.Sprintf("crashed %d times on %s: replaced elsewhere (%s)", v.Restarts, v.Node, v.Reason)
					avoid[v.Node] = true
					remove(v)
				}
			}
			mine = mineOf(svc.Name, r.Name)
			// Pending for want of room: place where there is room now.
			for _, v := range mine {
				if v.Node != "" || placing(1) == 0 {
					continue
				}
				p := room.schedule(svc, r, 1, slices.DeleteFunc(slices.Clone(mine), func(x api.VM) bool { return x.ID == v.ID }), nil)[0]
				if p.Node != "" || p.Reason != v.Reason {
					v.Node, v.Reason = p.Node, p.Reason
					set(v)
				}
				mine = mineOf(svc.Name, r.Name)
			}
			switch {
			case len(mine) < r.Instances:
				for _, p := range room.schedule(svc, r, placing(r.Instances-len(mine)), mine, avoid) {
					set(api.VM{
						ID: newID(), Service: svc.Name, Role: r.Name, UpdateDomain: p.UpdateDomain, Node: p.Node,
						VCPUs: r.VCPUs, MemoryMB: r.MemoryMB, Package: r.Package, Settings: maps.Clone(r.Settings), Health: cloneProbe(r.Health),
						Created: now, Desired: api.VMRunning,
						VMStatus: api.VMStatus{State: api.VMStatePending, Reason: p.Reason},
					})
				}
			case len(mine) > r.Instances:
				for _, v := range surplus(mine, len(mine)-r.Instances, domain) {
					remove(v)
				}
			}
		}
	}
	for _, v := range live {
		if v.Service != "" && v.Desired != api.VMDeleted && !wanted[[2]string{v.Service, v.Role}] {
			remove(v)
		}
	}
	return ch, more
}

// Sick are the instances to replace on another host: crashed at least
// maxRestarts times (their host restarts a crashed guest in place, with
// backoff, until then).
func Sick(vs []api.VM, maxRestarts int) map[string]bool {
	sick := map[string]bool{}
	for _, v := range vs {
		if v.Service != "" && v.Desired == api.VMRunning && v.State == api.VMStateCrashed && v.Restarts >= maxRestarts {
			sick[v.ID] = true
		}
	}
	return sick
}

// instances are a role's instances that are not being deleted.
func instances(vs []api.VM, svc, role string) []api.VM {
	var out []api.VM
	for _, v := range vs {
		if v.Service == svc && v.Role == role && v.Desired != api.VMDeleted {
			out = append(out, v)
		}
	}
	return out
}

// surplus picks the n instances to remove: unplaced ones first, then
// those not Running; then, one at a time, from the update domain holding
// the most (the highest among equals) and, in it, from the fault domain
// holding the most, the newest: what is left stays spread.
func surplus(vs []api.VM, n int, domain map[string]string) []api.VM {
	left := slices.Clone(vs)
	var out []api.VM
	for range n {
		perUD, perFD := map[int]int{}, map[string]int{}
		for _, v := range left {
			perUD[v.UpdateDomain]++
			perFD[domain[v.Node]]++
		}
		rank := func(v api.VM) int {
			switch {
			case v.Node == "":
				return 0
			case v.State != api.VMStateRunning:
				return 1
			}
			return 2
		}
		i := 0
		for j := 1; j < len(left); j++ {
			a, b := left[j], left[i] // is a a better victim than b?
			if c := cmp.Or(
				cmp.Compare(rank(a), rank(b)),
				-cmp.Compare(perUD[a.UpdateDomain], perUD[b.UpdateDomain]),
				-cmp.Compare(a.UpdateDomain, b.UpdateDomain),
				-cmp.Compare(perFD[domain[a.Node]], perFD[domain[b.Node]]),
				-a.Created.Compare(b.Created),
				-cmp.Compare(a.ID, b.ID),
			); c < 0 {
				i = j
			}
		}
		out = append(out, left[i])
		left = slices.Delete(left, i, i+1)
	}
	return out
}
