package guests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// overlay makes the guest's qcow2 overlay on the base disk.
func (s *Supervisor) overlay(ctx context.Context, dir string) (string, error) {
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	disk := filepath.Join(dir, "disk.qcow2")
	if _, err := os.Stat(disk); err == nil {
		return disk, nil
	}
	base := filepath.Join(s.cfg.Dir, "base.qcow2")
	if _, err := os.Stat(base); errors.Is(err, os.ErrNotExist) {
		if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", base+".tmp", s.cfg.DiskSize).CombinedOutput(); err != nil {
			return "", fmt.Errorf("base guest disk: qemu-img: %v: %s", err, out)
		}
		if err := os.Rename(base+".tmp", base); err != nil {
			return "", err
		}
	}
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, disk).CombinedOutput(); err != nil {
		return "", fmt.Errorf("guest overlay: qemu-img: %v: %s", err, out)
	}
	return disk, nil
}

// diskOf is "MAJ:MIN" of the whole disk holding dir (io.max takes disks,
// not partitions), or "" when dir is on no block device (tmpfs, overlay).
func diskOf(dir string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return ""
	}
	maj, min := unix.Major(st.Dev), unix.Minor(st.Dev)
	if maj == 0 {
		return ""
	}
	sys, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", maj, min))
	if err != nil {
		return ""
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(sys), "dev")); err == nil {
			return strings.TrimSpace(string(b))
		}
		return ""
	}
	return fmt.Sprintf("%d:%d", maj, min)
}
