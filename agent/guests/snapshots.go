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
	if s.snaps == nil {
		v, err := s.mgr.Start(ctx, spec)
		return v, "cold", err
	}
	st, err := s.snaps.Get(ctx, snapshot.Template{
		Spec: spec,
		Disk: s.overlay,
		// Every guest disk starts as an overlay of the same blank base.
		DiskID: "blank qcow2 of " + s.cfg.DiskSize,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		s.log.Warn("no guest snapshot: booting cold", "vm", spec.Name, "err", err)
		v, cerr := s.mgr.Start(ctx, spec)
		return v, short("cold: no snapshot: " + err.Error()), cerr
	}
	spec.Incoming = &st.Saved
	v, err := s.mgr.Start(ctx, spec)
	if err == nil {
		return v, "snapshot", nil
	}
	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	// The state is bad (corrupt, or a QEMU that refuses it): it goes, and
	// the next guest of this machine builds it again.
	s.log.Warn("guest snapshot did not resume: discarded, booting cold", "vm", spec.Name, "snapshot", st.Key, "err", err)
	if derr := s.snaps.Discard(st.Key); derr != nil {
		s.log.Warn("guest snapshot not discarded", "snapshot", st.Key, "err", derr)
	}
	why := "snapshot did not resume"
	if errors.Is(err, vmm.ErrCorrupt) {
		why = "snapshot corrupt"
	}
	spec.Incoming = nil
	v, cerr := s.mgr.Start(ctx, spec)
	return v, short(fmt.Sprintf("cold: %s: %v", why, err)), cerr
}

// short bounds a reason reported to the fabric.
func short(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
