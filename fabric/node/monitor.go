package node

import (
	"context"
	"fmt"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

func (r *Registry) touch(id string, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastSeen[id] = t
}

// withLastSeen fills in the in-memory LastSeen.
func (r *Registry) withLastSeen(n api.Node) api.Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	n.LastSeen = r.lastSeen[n.ID]
	if p := r.progress[n.ID]; p != nil && n.Phase == api.PhaseImaging {
		cp := *p
		n.Progress = &cp
	}
	return n
}

// heartbeating says whether a phase expects heartbeats.
func heartbeating(p api.Phase) bool {
	switch p {
	case api.PhaseRegistered, api.PhaseImaging, api.PhaseImaged, api.PhaseBooting, api.PhaseReady, api.PhaseWiping:
		return true
	}
	return false
}

// Unreachable is the pure decision of the monitor: which heartbeating nodes
// have been silent longer than grace at now (bootGrace for Booting ones).
// A node never heard from since the registry started counts from its
// start.
func Unreachable(nodes []api.Node, lastSeen map[string]time.Time, started, now time.Time, grace, bootGrace time.Duration) []string {
	var out []string
	for _, n := range nodes {
		if !heartbeating(n.Phase) {
			continue
		}
		seen, ok := lastSeen[n.ID]
		if !ok || seen.Before(started) {
			seen = started
		}
		if now.Sub(seen) > graceFor(n.Phase, grace, bootGrace) {
			out = append(out, n.ID)
		}
	}
	return out
}

func graceFor(p api.Phase, grace, bootGrace time.Duration) time.Duration {
	if p == api.PhaseBooting {
		return bootGrace
	}
	return grace
}

// Monitor marks silent nodes Unreachable until ctx ends. It counts
// silence from its own start at the earliest: a replica that has just
// become the leader (and never heard the heartbeats its predecessor did)
// gives every node a full grace, so a failover never makes one
// Unreachable.
func (r *Registry) Monitor(ctx context.Context) error {
	r.mu.Lock()
	r.started = r.cfg.Now()
	r.mu.Unlock()
	t := time.NewTicker(r.cfg.Grace / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.wg.Wait()
			return nil
		case <-t.C:
		}
		if err := r.sweep(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("node monitor", "err", err)
		}
	}
}

func (r *Registry) sweep(ctx context.Context) error {
	nodes, err := r.cfg.Store.Nodes(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	started := r.started
	seen := make(map[string]time.Time, len(r.lastSeen))
	for k, v := range r.lastSeen {
		seen[k] = v
	}
	r.mu.Unlock()
	now := r.cfg.Now()
	for _, id := range Unreachable(nodes, seen, started, now, r.cfg.Grace, r.cfg.BootGrace) {
		went := false
		var grace time.Duration
		n, err := r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
			grace = graceFor(n.Phase, r.cfg.Grace, r.cfg.BootGrace)
			r.mu.Lock()
			fresh := now.Sub(r.lastSeen[id]) <= grace // a heartbeat since the snapshot
			r.mu.Unlock()
			went = heartbeating(n.Phase) && !fresh
			if went {
				n.SetPhase(api.PhaseUnreachable, now, fmt.Sprintf("no heartbeat for %v (%s)", grace, n.Phase))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !went {
			continue
		}
		r.log.Warn("node unreachable", "node", id, "grace", grace)
		if n.BMC != nil {
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.cycleUnreachable(ctx, id)
			}()
		}
	}
	return nil
}
