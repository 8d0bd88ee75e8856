package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/loomfabric/loom/agent/console"
	"github.com/loomfabric/loom/agent/disk"
	"github.com/loomfabric/loom/agent/imaging"
	"github.com/loomfabric/loom/agent/inventory"
	"github.com/loomfabric/loom/fabric/api"
)

// provision lays down the host partition for goal g, then hands over.
func (s *session) provision(ctx context.Context, g api.Goal) {
	total := g.Image.DataBytes
	s.setReport(api.Status{Phase: api.PhaseImaging, Provision: g.Provision, Progress: &api.Progress{Total: total}})
	s.post(ctx)
	console.Mark(s.cfg.Console, "imaging", "image", g.Image.Name, "size", g.Image.Size, "data", total, "provision", g.Provision)
	start := time.Now()
	dev, err := s.image(ctx, g)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		reason := fmt.Sprintf("imaging %s onto %s: %v", g.Image.Name, dev, err)
		s.setReport(api.Status{Phase: api.PhaseFailed, Provision: g.Provision, Reason: reason, Cause: causeOf(err)})
		s.post(ctx)
		console.Mark(s.cfg.Console, "imaging-failed", "reason", fmt.Sprintf("%q", reason))
		s.log.Error("imaging failed", "err", err)
		return
	}
	secs := time.Since(start).Seconds()
	s.setReport(api.Status{Phase: api.PhaseImaged, Provision: g.Provision})
	s.post(ctx)
	console.Mark(s.cfg.Console, "imaged", "device", dev, "seconds", fmt.Sprintf("%.1f", secs), "mbps", fmt.Sprintf("%.0f", float64(g.Image.Size)/1e6/secs))
	s.handover(ctx, g)
}

// diskError marks a failure to choose, erase, partition or open the
// disk (api.CauseDisk), its text unchanged.
type diskError struct{ error }

func (e diskError) Unwrap() error { return e.error }

// causeOf sorts an imaging failure for the fabric's counts.
func causeOf(err error) string {
	var de diskError
	switch {
	case errors.As(err, &de):
		return api.CauseDisk
	case errors.Is(err, imaging.ErrVerify):
		return api.CauseVerify
	case errors.Is(err, imaging.ErrTransfer):
		return api.CauseTransfer
	}
	return api.CauseWrite
}

// image partitions the disk the profile names and writes the image into
// the host partition. On failure the partition is left unbootable.
func (s *session) image(ctx context.Context, g api.Goal) (string, error) {
	if g.Profile == nil || g.Image == nil {
		return "", diskError{errors.New("goal without profile or image")}
	}
	rule, err := api.ParseDiskRule(g.Profile.Disk)
	if err != nil {
		return "", diskError{err}
	}
	inv, err := inventory.Collect(s.cfg.Root)
	if err != nil {
		return "", diskError{err}
	}
	d, err := rule.Select(inv.Disks)
	if err != nil {
		return "", diskError{err}
	}
	whole := "/dev/" + d.Name
	parts, err := disk.Layout(d.SizeBytes, g.Image.Size)
	if err != nil {
		return whole, diskError{err}
	}
	f, err := os.OpenFile(whole, os.O_RDWR, 0)
	if err != nil {
		return whole, diskError{err}
	}
	wiped, err := disk.Erase(f, d.Name, d.SizeBytes, g.Profile.Wipe)
	if err == nil {
		console.Mark(s.cfg.Console, "wiped", "how", fmt.Sprintf("%q", wiped))
	}
	if err == nil {
		err = disk.WriteGPT(f, d.SizeBytes, parts)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = disk.Reread(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return whole, diskError{err}
	}
	dev, err := disk.PartitionDevice(d.Name, 1, 10*time.Second)
	if err != nil {
		return whole, diskError{err}
	}
	t, err := imaging.OpenTarget(dev)
	if err != nil {
		return dev, diskError{err}
	}
	defer func() { _ = t.Close() }() // for the failure paths; success closes and checks
	start := time.Now()
	w := &imaging.Writer{
		Manifest: *g.Image,
		Source:   &imaging.HTTPSource{URL: s.fabric.URL() + g.ImageURL, TLS: s.fabric.TLS}, // the node's certificate authenticates
		Target:   t,
		Log:      s.log,
		Progress: func(done, total uint64) {
			p := &api.Progress{Bytes: done, Total: total}
			if el := time.Since(start).Seconds(); el > 0 && done > 0 {
				p.BytesPerS = float64(done) / el
				p.ETASeconds = float64(total-done) / p.BytesPerS
			}
			s.setReport(api.Status{Phase: api.PhaseImaging, Provision: g.Provision, Progress: p})
		},
	}
	if err := w.Write(ctx); err != nil {
		if uerr := unbootable(t); uerr != nil {
			err = fmt.Errorf("%w (and zeroing the partition's start failed: %v)", err, uerr)
		}
		return dev, err
	}
	return dev, t.Close()
}

// decommission erases every fixed disk the strongest way it offers and
// reports what was done; the fabric then powers the node off.
func (s *session) decommission(ctx context.Context) {
	s.setReport(api.Status{Phase: api.PhaseWiping})
	s.post(ctx)
	console.Mark(s.cfg.Console, "wiping")
	inv, err := inventory.Collect(s.cfg.Root)
	var done []string
	if err == nil {
		for _, d := range inv.Disks {
			if d.Removable {
				continue
			}
			var what string
			what, err = eraseDisk(d)
			if err != nil {
				break
			}
			s.log.Info("disk erased", "disk", d.Name, "how", what)
			done = append(done, what)
		}
	}
	if err == nil && len(done) == 0 {
		err = errors.New("no fixed disk found")
	}
	if err != nil {
		reason := fmt.Sprintf("wiping: %v (erased before it: %s)", err, strings.Join(done, "; "))
		s.setReport(api.Status{Phase: api.PhaseFailed, Reason: reason})
		s.post(ctx)
		console.Mark(s.cfg.Console, "wipe-failed", "reason", fmt.Sprintf("%q", reason))
		return
	}
	summary := strings.Join(done, "; ")
	// The console first: the fabric powers the node off on this report.
	console.Mark(s.cfg.Console, "decommissioned", "wiped", fmt.Sprintf("%q", summary))
	s.setReport(api.Status{Phase: api.PhaseDecommissioned, Reason: summary})
	s.post(ctx)
}

func eraseDisk(d api.Disk) (string, error) {
	f, err := os.OpenFile("/dev/"+d.Name, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		return "", err
	}
	what, err := disk.Erase(f, d.Name, d.SizeBytes, api.WipeStrongest)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return what, err
}

// unbootable zeroes the start of a partition whose image failed, so no
// filesystem (and no kernel on it) is ever found there.
func unbootable(t *os.File) error {
	zero := make([]byte, 1<<20)
	f, err := os.OpenFile(t.Name(), os.O_WRONLY, 0) // not O_DIRECT: zero is unaligned
	if err != nil {
		return err
	}
	_, err = f.WriteAt(zero, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// handover boots the host OS from the host partition: kexec, else reboot.
func (s *session) handover(ctx context.Context, g api.Goal) {
	var extra string
	if g.Profile != nil {
		extra = g.Profile.KernelArgs
	}
	s.setReport(api.Status{Phase: api.PhaseBooting, Provision: g.Provision})
	s.post(ctx)
	dev, err := findHost()
	if err == nil {
		err = loadHost(dev, hostCmdline(s.cmdline, extra), s.seed)
	}
	if err == nil {
		console.Mark(s.cfg.Console, "kexec", "device", dev)
		err = execHost()
	}
	s.log.Error("kexec into the host failed; rebooting", "err", err)
	console.Mark(s.cfg.Console, "kexec-failed", "reason", fmt.Sprintf("%q", err.Error()))
	if err := reboot(); err != nil {
		s.log.Error("reboot failed: waiting for the fabric (power cycle through the BMC, or by hand)", "err", err)
	}
}
