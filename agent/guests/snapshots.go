package guests

import (
	"context"
	"errors"
	"fmt"

	"github.com/loomfabric/loom/agent/snapshot"
	"github.com/loomfabric/loom/agent/vmm"
)

// boot starts a guest: resumed from its machine's snapshot (built first
// if there is none) unless the supervisor boots cold, and booted cold when
// that fails: a snapshot that cannot be built or resumed costs time, never
// the guest. How it started is returned for the guest's status.
func (s *Supervisor) boot(ctx context.Context, spec vmm.Spec) (*vmm.VM, string, error) {
	how := "cold"
	if s.snaps != nil {
		v, err := s.resume(ctx, spec)
		if err == nil {
			return v, "snapshot", nil
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		s.log.Warn("guest not resumed from a snapshot: booting cold", "vm", spec.Name, "err", err)
		how = short("cold: " + err.Error())
	}
	v, err := s.mgr.Start(ctx, spec)
	return v, how, err
}

// resume starts a guest from its machine's snapshot. A snapshot that does
// not resume (corrupt, or a QEMU that refuses it) is discarded: the next
// guest of this machine builds it again. Its error says why, for the
// guest's status.
func (s *Supervisor) resume(ctx context.Context, spec vmm.Spec) (*vmm.VM, error) {
	st, err := s.snaps.Get(ctx, snapshot.Template{
		Spec: spec,
		Disk: s.overlay,
		// Every guest disk starts as an overlay of the same blank base.
		DiskID: "blank qcow2 of " + s.cfg.DiskSize,
	})
	if err != nil {
		return nil, fmt.Errorf("no snapshot: %w", err)
	}
	spec.Incoming = &st.Saved
	v, err := s.mgr.Start(ctx, spec)
	if err == nil || ctx.Err() != nil {
		return v, err
	}
	if derr := s.snaps.Discard(st.Key); derr != nil {
		s.log.Warn("guest snapshot not discarded", "snapshot", st.Key, "err", derr)
	}
	if errors.Is(err, vmm.ErrCorrupt) {
		return nil, fmt.Errorf("snapshot corrupt: %w", err)
	}
	return nil, fmt.Errorf("snapshot did not resume: %w", err)
}

// short bounds a reason reported to the fabric.
func short(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
