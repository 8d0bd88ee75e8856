package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/bmc"
	"github.com/loomfabric/loom/fabric/store"
)

// ErrInvalid means a request's content is wrong.
var ErrInvalid = errors.New("invalid")

// ErrBMC means a power operation through a node's BMC failed; the node is
// left as it was.
var ErrBMC = errors.New("BMC")

// PowerFunc performs a power operation (bmc.Do, or a fake in tests).
type PowerFunc func(ctx context.Context, t bmc.Target, op bmc.Op) (string, error)

// SetBMC gives node id a BMC (nil: none). Its credential must exist.
func (r *Registry) SetBMC(ctx context.Context, id string, b *api.BMC) (api.Node, error) {
	if b != nil {
		c := *b // the caller's stays as it was
		c.Default()
		b = &c
		if err := b.Validate(); err != nil {
			return api.Node{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if _, err := r.cfg.Store.BMCCredential(ctx, b.Credential); err != nil {
			if store.IsNotFound(err) {
				return api.Node{}, fmt.Errorf("%w: bmc.credential %q does not exist (loom credential set %s ...)", ErrInvalid, b.Credential, b.Credential)
			}
			return api.Node{}, err
		}
	}
	return r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
		if b != nil && n.BMC != nil && n.BMC.Address == b.Address {
			b.Power, b.PowerChecked, b.LastAction = n.BMC.Power, n.BMC.PowerChecked, n.BMC.LastAction
		}
		n.BMC = b
		return nil
	})
}

// Power performs op on node id through its BMC and records the power
// state; why is kept with the action. On failure the node is unchanged and
// the error wraps ErrBMC (and bmc.ErrAuth for refused credentials).
func (r *Registry) Power(ctx context.Context, id string, op bmc.Op, why string) (string, error) {
	n, err := r.cfg.Store.Node(ctx, id)
	if err != nil {
		return "", err
	}
	if n.BMC == nil {
		return "", fmt.Errorf("%w: node %s has no BMC (loom node bmc %s ...)", ErrConflict, id, id)
	}
	cred, err := r.cfg.Store.BMCCredential(ctx, n.BMC.Credential)
	if err != nil {
		return "", fmt.Errorf("%w: node %s: %v", ErrBMC, id, err)
	}
	do := r.cfg.Power
	if do == nil {
		do = bmc.Do
	}
	state, err := do(ctx, bmc.Target{BMC: *n.BMC, Username: cred.Username, Password: cred.Password}, op)
	if err != nil {
		return "", fmt.Errorf("%w: node %s: %w", ErrBMC, id, err)
	}
	now := r.cfg.Now()
	_, err = r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
		if n.BMC == nil {
			return nil
		}
		n.BMC.Power, n.BMC.PowerChecked = state, now
		if op != bmc.OpStatus {
			n.BMC.LastAction = fmt.Sprintf("%s at %s: %s", op, now.UTC().Format(time.RFC3339), why)
		}
		return nil
	})
	if op != bmc.OpStatus {
		r.log.Info("node power", "node", id, "op", op, "power", state, "why", why)
	}
	return state, err
}

// netboot makes a node with a BMC boot from the network now: PXE on the
// next start, then a power cycle.
func (r *Registry) netboot(ctx context.Context, id, why string) error {
	if _, err := r.Power(ctx, id, bmc.OpPXEOnce, why); err != nil {
		return err
	}
	_, err := r.Power(ctx, id, bmc.OpCycle, why)
	return err
}

// cycleUnreachable power-cycles a node that went Unreachable, once per
// silence, before anyone gives up on it.
func (r *Registry) cycleUnreachable(ctx context.Context, id string) {
	if err := r.netboot(ctx, id, "unreachable: one power cycle before it is given up"); err != nil {
		r.log.Warn("power-cycling an unreachable node", "node", id, "err", err)
		now := r.cfg.Now()
		_, uerr := r.cfg.Store.UpdateNode(ctx, id, func(n *api.Node) error {
			if n.BMC != nil {
				n.BMC.LastAction = fmt.Sprintf("cycle failed at %s: %v", now.UTC().Format(time.RFC3339), err)
			}
			return nil
		})
		if uerr != nil {
			r.log.Warn("recording the failed power cycle", "node", id, "err", uerr)
		}
	}
}
