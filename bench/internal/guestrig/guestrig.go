// Package guestrig runs Loom's guest supervisor in-process for the guest
// benchmarks: the product's supervisor, channel, ingress and guest agent,
// with role packages read from build/roles instead of fetched from loomd.
package guestrig

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/loomfabric/loom/agent/guests"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
)

// Rig is a supervisor over a temporary directory.
type Rig struct {
	Sup *guests.Supervisor
	Dir string
	// Accel is how the guests run (lab.DecideAccel: $LOOM_ACCEL, probed).
	Accel api.Accel
	pkg   api.GoalVM
}

// New starts a supervisor for the guest OS in guestDir running the role
// package pkg; extra QEMU arguments and kernel arguments are optional;
// cold boots every guest (no snapshots).
func New(ctx context.Context, guestDir, pkg string, qemuArgs []string, cmdline string, cold bool) (*Rig, error) {
	kernel, _ := filepath.Abs(filepath.Join(guestDir, "vmlinuz"))
	initrd, _ := filepath.Abs(filepath.Join(guestDir, "initramfs.cpio.xz"))
	for _, f := range []string{kernel, initrd, pkg} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%w (run make images)", err)
		}
	}
	b, err := os.ReadFile(pkg)
	if err != nil {
		return nil, err
	}
	acc, err := lab.DecideAccel(ctx, ".", "", nil)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	dir, err := os.MkdirTemp("", "loom-bench-guest-")
	if err != nil {
		return nil, err
	}
	r := &Rig{Dir: dir, Accel: acc, pkg: api.GoalVM{Package: filepath.Base(pkg), PackageDigest: hex.EncodeToString(sum[:]), PackageURL: pkg}}
	r.Sup = guests.New(guests.Config{
		Dir: dir, Kernel: kernel, Initrd: initrd, IngressIP: "127.0.0.1",
		QEMUArgs: qemuArgs, Cmdline: cmdline, StopGrace: 5 * time.Second, Accel: acc, ColdBoot: cold,
		Log: slog.New(slog.DiscardHandler),
		Fetch: func(_ context.Context, path string, w io.Writer) error {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer func() { _ = f.Close() }() // read only
			_, err = io.Copy(w, f)
			return err
		},
	})
	if err := r.Sup.Start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Goal is a guest running the rig's package.
func (r *Rig) Goal(id string, memoryMB int) api.GoalVM {
	g := r.pkg
	g.ID, g.VCPUs, g.MemoryMB, g.Desired = id, 1, memoryMB, api.VMRunning
	return g
}

// Wait polls the supervisor's report until ok(status of id) or timeout.
func (r *Rig) Wait(id string, d time.Duration, ok func(api.VMStatus, bool) bool) (api.VMStatus, error) {
	deadline := time.Now().Add(d)
	for {
		var st api.VMStatus
		found := false
		for _, s := range r.Sup.Report() {
			if s.ID == id {
				st, found = s, true
			}
		}
		if ok(st, found) {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("guest %s: timed out after %v (state %s %s); console: %s", id, d, st.State, st.Reason, filepath.Join(r.Dir, "guests", id, "console.log"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close removes every guest and the directory.
func (r *Rig) Close() {
	r.Sup.Apply(nil)
	if _, err := r.Wait("", time.Minute, func(api.VMStatus, bool) bool { return len(r.Sup.Report()) == 0 }); err != nil {
		fmt.Fprintln(os.Stderr, "guests not all gone:", err)
	}
	lab.RemoveAll(r.Dir)
}

// Median of v (sorted in place).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
	return v[len(v)/2]
}
