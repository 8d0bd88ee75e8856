package snapshot

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/loomfabric/loom/agent/vmm"
	"github.com/loomfabric/loom/fabric/api"
)

// TestKey: the key moves with everything a state depends on (the guest
// OS's files, QEMU's binary, the accelerator, the machine's size, devices
// and command line, the disk) and with nothing else (the guest's name or
// the files' paths).
func TestKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := &Cache{Dir: dir, QEMU: write("qemu", "qemu 1"), Accel: api.Accel{Accel: "tcg", CPU: "max"}}
	base := Template{Spec: vmm.Spec{VCPUs: 1, MemoryMB: 256, Kernel: write("vmlinuz", "kernel 1"), Initrd: write("initrd", "initrd 1")}, DiskID: "blank 1G"}
	key := func(c *Cache, t2 Template) string {
		k, _, err := c.Key(t2)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k0 := key(c, base)

	same := base
	same.Spec.Name, same.Spec.Disk = "another-guest", "/elsewhere/disk.qcow2"
	same.Spec.Kernel = write("vmlinuz-copy", "kernel 1")
	if k := key(c, same); k != k0 {
		t.Errorf("another guest's name, disk path and a copy of the kernel moved the key")
	}

	changes := map[string]func(*Cache, *Template){
		"memory":  func(_ *Cache, t *Template) { t.Spec.MemoryMB = 512 },
		"vcpus":   func(_ *Cache, t *Template) { t.Spec.VCPUs = 2 },
		"cmdline": func(_ *Cache, t *Template) { t.Spec.Cmdline = "quiet" },
		"args":    func(_ *Cache, t *Template) { t.Spec.ExtraArgs = []string{"-device", "virtio-net-pci"} },
		"disk":    func(_ *Cache, t *Template) { t.DiskID = "blank 2G" },
		"kernel":  func(_ *Cache, t *Template) { t.Spec.Kernel = write("vmlinuz-2", "kernel 2") },
		"initrd":  func(_ *Cache, t *Template) { t.Spec.Initrd = write("initrd-2", "initrd 2") },
		"qemu":    func(c *Cache, _ *Template) { c.QEMU = write("qemu-2", "qemu 2") },
		"accel":   func(c *Cache, _ *Template) { c.Accel = api.Accel{Accel: "kvm", CPU: "host"} },
	}
	for what, change := range changes {
		c2, t2 := &Cache{Dir: c.Dir, QEMU: c.QEMU, Accel: c.Accel}, base
		change(c2, &t2)
		if k := key(c2, t2); k == k0 {
			t.Errorf("a new %s kept the key", what)
		}
	}

	// The guest OS rebuilt in place: same path, new contents.
	write("vmlinuz", "kernel 1, rebuilt")
	if k := key(c, base); k == k0 {
		t.Error("a kernel rebuilt in place kept the key")
	}
}
