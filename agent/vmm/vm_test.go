package vmm

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/scripts/lab"
	"github.com/loomfabric/loom/scripts/vmtest"
)

const guestDir = "../../build/guest"

// serveChannel runs the host end for v, reconnecting when the guest's
// session ends (a guest reboot starts a new one), and reports what arrives.
func serveChannel(ctx context.Context, v *VM, hellos chan<- channel.Hello, msgs chan<- channel.Message) *channel.Host {
	h := &channel.Host{
		Instance: v.Spec.Name,
		OnHello:  func(g channel.Hello) { hellos <- g },
		Services: map[string]channel.Handler{
			"control": func(_ context.Context, s net.Conn) {
				defer s.Close()
				for {
					var m channel.Message
					if channel.ReadFrame(s, &m) != nil {
						return
					}
					msgs <- m
				}
			},
		},
	}
	go func() {
		for ctx.Err() == nil {
			conn, err := v.Channel()
			if err == nil {
				h.Serve(ctx, conn)
				conn.Close()
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	return h
}

// waitHello waits for the guest's hello; a QEMU that dies meanwhile fails
// the test at once, with its own words.
func waitHello(t *testing.T, hellos <-chan channel.Hello, what string, v *VM) channel.Hello {
	t.Helper()
	deadline := time.After(3 * time.Minute)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	console := func() string { return lab.Tail(filepath.Join(v.Dir, "console.log"), 30) }
	for {
		select {
		case h := <-hellos:
			return h
		case <-tick.C:
			if !v.Alive() {
				t.Fatalf("%s: QEMU exited: %s; console:\n%s", what, lab.Tail(filepath.Join(v.Dir, "qemu.log"), 5), console())
			}
		case <-deadline:
			t.Fatalf("%s: no hello from the guest; its console:\n%s", what, console())
		}
	}
}

// TestGuestOverChannel boots a guest with no NIC; it must reach the host
// over the channel only, see no interface but lo, survive a QMP reboot, be
// adopted by a new manager without a restart, and be seen dying on kill -9.
func TestGuestOverChannel(t *testing.T) {
	acc := vmtest.RequireGuest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kernel, _ := filepath.Abs(filepath.Join(guestDir, "vmlinuz"))
	initrd, _ := filepath.Abs(filepath.Join(guestDir, "initramfs.cpio.xz"))
	m := &Manager{Dir: t.TempDir(), Accel: acc}
	v, err := m.Start(ctx, Spec{Name: "g1", VCPUs: 1, MemoryMB: 256, Kernel: kernel, Initrd: initrd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(v.PID, syscall.SIGKILL) })
	if st, err := v.Status(); err != nil || st != "running" {
		t.Fatalf("QMP status = %q, %v; want running", st, err)
	}
	for _, a := range m.Args(v.Spec) {
		if strings.Contains(a, "netdev") || strings.Contains(a, "virtio-net") {
			t.Fatalf("the guest has a NIC: %q", a)
		}
	}

	hellos := make(chan channel.Hello, 8)
	msgs := make(chan channel.Message, 64)
	serveChannel(ctx, v, hellos, msgs)
	h := waitHello(t, hellos, "first boot", v)
	if h.Instance != "g1" || h.Side != "guest" {
		t.Errorf("guest hello = %+v, want instance g1 from the guest side", h)
	}
	deadline := time.After(time.Minute)
	for got := false; !got; {
		select {
		case msg := <-msgs:
			if msg.Type == "interfaces" {
				if diff := cmp.Diff([]string{"lo"}, msg.Interfaces); diff != "" {
					t.Errorf("the guest sees interfaces (-want +got):\n%s", diff)
				}
				got = true
			}
		case <-deadline:
			t.Fatal("no interfaces report from the guest")
		}
	}

	// QMP reboot: the guest comes back and says hello again.
	if err := v.Reboot(); err != nil {
		t.Fatal(err)
	}
	waitHello(t, hellos, "after system_reset", v)

	// A new manager (a restarted host agent) adopts the running guest.
	pid := v.PID
	v.Close()
	m2 := &Manager{Dir: m.Dir, Accel: acc}
	v2, err := m2.Adopt(ctx, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if v2.PID != pid || v2.Spec.Kernel != kernel {
		t.Errorf("adopted pid %d spec %+v, want pid %d and the original spec", v2.PID, v2.Spec, pid)
	}
	if st, err := v2.Status(); err != nil || st != "running" {
		t.Errorf("adopted guest status = %q, %v; want running (not restarted)", st, err)
	}

	// kill -9: the manager sees it gone.
	syscall.Kill(v2.PID, syscall.SIGKILL)
	for i := 0; v2.Alive(); i++ {
		if i > 50 {
			t.Fatal("killed QEMU still alive after 5s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := m2.Adopt(ctx, "g1"); err == nil {
		t.Errorf("Adopt of a dead guest succeeded")
	}
}
