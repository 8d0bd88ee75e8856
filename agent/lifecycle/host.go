package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/loomfabric/loom/agent/accel"
	"github.com/loomfabric/loom/agent/console"
	"github.com/loomfabric/loom/agent/disk"
	"github.com/loomfabric/loom/fabric/api"

	"github.com/loomfabric/loom/agent/guests"
)

// localIP is the address this machine uses to reach the fabric (or want,
// if given).
func localIP(fabric, want string) (string, error) {
	if want != "" {
		return want, nil
	}
	u, err := url.Parse(fabric)
	if err != nil {
		return "", err
	}
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "80")
	}
	c, err := net.Dial("udp", host) // no packet is sent: this only picks the route
	if err != nil {
		return "", fmt.Errorf("finding the route to the fabric %s: %w", fabric, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// startGuests starts a host's guest supervisor (adopting running guests),
// once per agent; a maintenance OS has none.
func (a *Agent) startGuests(ctx context.Context, b *boot, log *slog.Logger) error {
	c := &a.cfg
	if c.Mode != api.ModeHost || a.guests != nil {
		return nil
	}
	dir := c.GuestDir
	if dir == "" {
		dir = "/var/lib/loom"
		if c.Fabric == "" { // the uinit of an imaged host: guests live on its data partition
			if err := mountData(dir, log); err != nil {
				log.Warn("guests live on the RAM root: no data partition", "err", err)
			} else {
				console.Mark(c.Console, "data", "dir", dir)
			}
		}
	}
	kernel, initrd := c.GuestKernel, c.GuestInitrd
	if kernel == "" {
		kernel = "/guest/vmlinuz"
	}
	if initrd == "" {
		initrd = "/guest/initramfs.cpio.xz"
	}
	for _, f := range []*string{&kernel, &initrd} {
		abs, err := filepath.Abs(*f)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			log.Warn("guest OS missing: guests will fail to start", "err", err)
		}
		*f = abs
	}
	mountCgroup2(log)
	cache := c.AccelCache
	if cache == "" {
		cache = dir
	}
	v, err := accel.Decide(ctx, accel.Config{Mode: c.Accel, Kernel: kernel, CacheDir: cache, Log: log})
	if err != nil {
		return fmt.Errorf("deciding how guests run: %w", err)
	}
	a.accel = v
	console.Mark(c.Console, "accel", "accel", v.Accel, "cpu", v.CPU)
	ingress := c.IngressIP
	if ingress == "" {
		ingress = b.ip
	}
	a.guests = guests.New(guests.Config{
		Dir: dir, Kernel: kernel, Initrd: initrd, IngressIP: ingress, Accel: v, Log: log, ColdBoot: c.ColdGuests,
		Fetch: b.fabric.Blob,
		Queue: func(ctx context.Context, vm string, req api.QueueRequest) (api.QueueReply, error) {
			r, nc := a.reg.Load(), a.node.Load()
			if r == nil || nc == nil {
				return api.QueueReply{}, errors.New("this host is not registered with the fabric right now")
			}
			return nc.Queue(ctx, r.NodeID, vm, req)
		},
		OnChange: func() {
			select {
			case a.changed <- struct{}{}:
			default:
			}
		},
	})
	if err := a.guests.Start(ctx); err != nil {
		return fmt.Errorf("guest supervisor: %w", err)
	}
	console.Mark(c.Console, "guests", "dir", dir)
	return nil
}

// mountCgroup2 mounts the unified cgroup hierarchy at /sys/fs/cgroup when
// nothing is there (the host OS's init does not): guests get their control
// groups from it. A machine with cgroups already mounted is left alone.
func mountCgroup2(log *slog.Logger) {
	const dir = "/sys/fs/cgroup"
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warn("cgroup2", "err", err)
		return
	}
	if err := syscall.Mount("cgroup2", dir, "cgroup2", 0, ""); err != nil {
		log.Warn("mounting cgroup2: guests run without control groups", "err", err)
	}
}

// mountData mounts the "loom-data" partition at dir, making an ext4 file
// system on it first if it has none (its first boot after imaging).
func mountData(dir string, log *slog.Logger) error {
	dev, err := disk.FindPartition("loom-data")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(dev, dir, "ext4", 0, ""); err == nil {
		return nil
	}
	if hasExt4(dev) {
		return fmt.Errorf("%s has a file system that does not mount", dev)
	}
	log.Info("making a file system on the data partition", "dev", dev)
	mkfs := "/usr/sbin/mke2fs" // u-root's PATH has no sbin
	if _, err := os.Stat(mkfs); err != nil {
		mkfs = "mke2fs"
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-t", "ext4", "-L", "loom-data", "-E", "lazy_itable_init=1,lazy_journal_init=1", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("mke2fs %s: %v: %s", dev, err, out)
	}
	return syscall.Mount(dev, dir, "ext4", 0, "")
}

// hasExt4 reports whether dev carries an ext2/3/4 superblock (magic 0xEF53
// at byte 1080): such a disk is never formatted over.
func hasExt4(dev string) bool {
	f, err := os.Open(dev)
	if err != nil {
		return true // unknown: do not format
	}
	defer func() { _ = f.Close() }() // read only
	b := make([]byte, 2)
	if _, err := f.ReadAt(b, 1080); err != nil {
		return true
	}
	return b[0] == 0x53 && b[1] == 0xef
}
