package snapshot_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/snapshot"
	"github.com/loomfabric/loom/agent/vmm"
	"github.com/loomfabric/loom/scripts/lab"
	"github.com/loomfabric/loom/scripts/vmtest"
)

// blankDisk makes an overlay of one blank base, as the host agent does.
func blankDisk(base string) func(context.Context, string) (string, error) {
	return func(ctx context.Context, dir string) (string, error) {
		if _, err := os.Stat(base); err != nil {
			if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", base, "64M").CombinedOutput(); err != nil {
				return "", errors.New(string(out))
			}
		}
		disk := filepath.Join(dir, "disk.qcow2")
		if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, disk).CombinedOutput(); err != nil {
			return "", errors.New(string(out))
		}
		return disk, nil
	}
}

// resumed starts a guest from st and waits for its guest agent's hello
// over the channel, served as the host agent would (its name, the time,
// entropy in the host's hello).
func resumed(t *testing.T, ctx context.Context, m *vmm.Manager, name string, spec vmm.Spec, st snapshot.State, disk func(context.Context, string) (string, error)) (*vmm.VM, time.Duration) {
	t.Helper()
	dir := filepath.Join(m.Dir, name)
	os.MkdirAll(dir, 0o700)
	d, err := disk(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	spec.Name, spec.Disk, spec.Incoming = name, d, &st.Saved
	t0 := time.Now()
	v, err := m.Start(ctx, spec)
	if err != nil {
		t.Fatalf("resuming %s: %v", name, err)
	}
	t.Cleanup(func() { v.Kill() })
	hellos := make(chan channel.Hello, 1)
	h := &channel.Host{Instance: name, OnHello: func(g channel.Hello) { hellos <- g }}
	go func() {
		for ctx.Err() == nil {
			if conn, err := v.Channel(); err == nil {
				h.Serve(ctx, conn)
				conn.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	select {
	case <-hellos:
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: no hello after the resume; console:\n%s", name, lab.Tail(filepath.Join(v.Dir, "console.log"), 20))
	}
	return v, time.Since(t0)
}

// TestSnapshot builds a template's state, resumes two guests from it (each
// says hello and takes its own name, clock and entropy from its host), is
// rebuilt for a new machine (the stale state removed), and refuses a
// corrupt state before the guest runs.
func TestSnapshot(t *testing.T) {
	acc := vmtest.RequireGuest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kernel, _ := filepath.Abs("../../build/guest/vmlinuz")
	initrd, _ := filepath.Abs("../../build/guest/initramfs.cpio.xz")
	work := t.TempDir()
	disk := blankDisk(filepath.Join(work, "base.qcow2"))
	c := &snapshot.Cache{Dir: filepath.Join(work, "snapshots"), Accel: acc}
	spec := vmm.Spec{VCPUs: 1, MemoryMB: 256, Kernel: kernel, Initrd: initrd}
	tmpl := snapshot.Template{Spec: spec, Disk: disk, DiskID: "blank 64M"}

	t0 := time.Now()
	st, err := c.Get(ctx, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s (%d MB) in %.1fs", st.Key, st.Saved.Size>>20, time.Since(t0).Seconds())
	if !st.Built || st.Saved.Size == 0 {
		t.Fatalf("first Get = %+v, want a state built", st)
	}
	again, err := c.Get(ctx, tmpl)
	if err != nil || again.Built || again.Saved != st.Saved {
		t.Fatalf("second Get = %+v, %v; want the kept state, not built again", again, err)
	}

	m := &vmm.Manager{Dir: filepath.Join(work, "guests"), Accel: acc}
	for _, name := range []string{"a1", "a2"} {
		v, took := resumed(t, ctx, m, name, spec, st, disk)
		t.Logf("%s: resume → hello %.2fs", name, took.Seconds())
		con := vmtest.NewConsole(filepath.Join(v.Dir, "console.log"), nil)
		if err := con.Expect("LOOM-MARK instance name="+name, 30*time.Second); err != nil {
			t.Errorf("%s: the guest agent did not take its name from its host: %v", name, err)
		}
		if err := con.Expect("LOOM-MARK clock stepped=", 5*time.Second); err != nil {
			t.Errorf("%s: the clock of a guest resumed from an older state was not stepped: %v", name, err)
		}
		if strings.Count(con.Text(), "Linux version") != 0 {
			t.Errorf("%s: a resumed guest printed a kernel banner: it booted", name)
		}
		con.Close()
	}

	// A new machine option is a new key: built, and the stale state of
	// the same machine removed.
	spec2 := spec
	spec2.Cmdline = "loom.test=2"
	st2, err := c.Get(ctx, snapshot.Template{Spec: spec2, Disk: disk, DiskID: "blank 64M"})
	if err != nil || !st2.Built || st2.Key == st.Key {
		t.Fatalf("Get of a changed machine = %+v, %v; want a new state built", st2, err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, st.Key)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale state %s is still kept (%v)", st.Key, err)
	}

	// A corrupt state: QEMU is fed it, the hash is wrong, the guest never
	// runs and Start says why.
	f, err := os.OpenFile(st2.Saved.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("corrupt!"), st2.Saved.Size/2)
	f.Close()
	spec2.Name, spec2.Incoming = "bad", &st2.Saved
	os.MkdirAll(filepath.Join(m.Dir, "bad"), 0o700)
	if spec2.Disk, err = disk(ctx, filepath.Join(m.Dir, "bad")); err != nil {
		t.Fatal(err)
	}
	v, err := m.Start(ctx, spec2)
	if err == nil {
		v.Kill()
		t.Fatal("a corrupt state resumed")
	}
	if !errors.Is(err, vmm.ErrCorrupt) {
		t.Errorf("resuming a corrupt state: %v, want ErrCorrupt", err)
	}
	if pid := readPID(filepath.Join(m.Dir, "bad", "qemu.pid")); pid > 0 && syscall.Kill(pid, 0) == nil {
		t.Errorf("the QEMU fed a corrupt state still runs (pid %d)", pid)
	}
	if err := c.Discard(st2.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, st2.Key)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a discarded state is still kept (%v)", err)
	}
}

func readPID(p string) int {
	b, _ := os.ReadFile(p)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
