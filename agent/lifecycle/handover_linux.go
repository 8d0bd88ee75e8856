package lifecycle

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loomfabric/loom/agent/cmdline"
	"github.com/loomfabric/loom/agent/disk"
	"github.com/loomfabric/loom/agent/seed"
)

// hostMount is where the host partition is mounted for the handover.
const hostMount = "/mnt/loom-host"

// hostCmdline derives the host kernel's command line from the maintenance
// one: console settings and the fabric's address stay, the maintenance-only
// parameters go, loom.mode=host and the profile's arguments are added.
func hostCmdline(current string, extra string) string {
	var keep []string
	for _, kv := range cmdline.Split(current) {
		switch k := kv[0]; {
		case k == "initrd" || k == "BOOT_IMAGE" || k == "loom.boot" || k == "loom.mode" || k == "loom.token":
			continue
		case kv[1] == "":
			keep = append(keep, k)
		default:
			keep = append(keep, k+"="+kv[1])
		}
	}
	keep = append(keep, "loom.mode=host")
	if extra = strings.TrimSpace(extra); extra != "" {
		keep = append(keep, extra)
	}
	return strings.Join(keep, " ")
}

// loadHost mounts the host partition and loads its kernel and initramfs,
// with the seed appended (the host agent's CA and enrollment token), for
// kexec. The caller then calls execHost.
func loadHost(dev, cmd string, sd seed.Seed) error {
	if err := os.MkdirAll(hostMount, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, hostMount, "ext4", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mounting %s: %w", dev, err)
	}
	// kexec_file_load has copied what it needs; a mount left behind in
	// the maintenance OS is harmless.
	defer func() { _ = unix.Unmount(hostMount, 0) }()
	k, err := os.Open(filepath.Join(hostMount, "boot/vmlinuz"))
	if err != nil {
		return fmt.Errorf("host kernel: %w", err)
	}
	defer func() { _ = k.Close() }() // read only
	i, err := os.Open(filepath.Join(hostMount, "boot/initramfs.cpio.xz"))
	if err != nil {
		return fmt.Errorf("host initramfs: %w", err)
	}
	defer func() { _ = i.Close() }()
	fd, err := unix.MemfdCreate("initramfs", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("host initramfs: %w", err)
	}
	seeded := os.NewFile(uintptr(fd), "initramfs")
	defer func() { _ = seeded.Close() }() // in memory; kexec_file_load has read it
	if err := sd.Append(seeded, i); err != nil {
		return fmt.Errorf("host initramfs: %w", err)
	}
	if err := unix.KexecFileLoad(int(k.Fd()), int(seeded.Fd()), cmd, 0); err != nil {
		return fmt.Errorf("kexec_file_load of %s: %w", dev, err)
	}
	return nil
}

// execHost jumps into the loaded kernel. It returns only on failure.
func execHost() error {
	unix.Sync()
	time.Sleep(300 * time.Millisecond) // let the console drain
	return unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC)
}

// reboot restarts the machine (the fallback when kexec fails: the fabric's
// iPXE script then boots the maintenance OS, whose goal is boot-host).
func reboot() error {
	unix.Sync()
	time.Sleep(300 * time.Millisecond)
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// setClock sets the system clock (CAP_SYS_TIME: the agent runs as root).
var setClock = setSystemClock

func setSystemClock(t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	return unix.Settimeofday(&tv)
}

// findHost locates the host partition.
func findHost() (string, error) { return disk.FindPartition("loom-host") }
