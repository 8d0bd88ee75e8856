package initramfs

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
)

// bootDir is where `make initramfs` puts the maintenance OS.
const bootDir = "../build/maintenance"

func maintenanceBuilt() error {
	for _, f := range []string{"vmlinuz", "initramfs.cpio.xz"} {
		if _, err := os.Stat(filepath.Join(bootDir, f)); err != nil {
			return fmt.Errorf("no maintenance OS (%v): run 'make initramfs'", err)
		}
	}
	return nil
}

// TestNetbootRegisters boots one QEMU server with -boot n against a real
// loomd in a fresh network namespace: QEMU's iPXE ROM gets DHCP and the
// script from loomd, boots the u-root maintenance OS, whose agent must
// register with the inventory QEMU was given. Then the VM is killed and
// the node must go Unreachable.
func TestNetbootRegisters(t *testing.T) {
	lab.RequireVM(t, maintenanceBuilt())
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()

	loomdBin := filepath.Join(dir, "loomd")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", loomdBin, "../fabric/cmd/loomd").CombinedOutput(); err != nil {
		t.Fatalf("building loomd: %v\n%s", err, out)
	}
	boot, err := filepath.Abs(bootDir)
	if err != nil {
		t.Fatal(err)
	}

	ln, err := lab.NewNet(ctx, "loom-t-"+lab.Suffix(), netip.MustParsePrefix("10.79.0.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	loomdLog := filepath.Join(dir, "loomd.log")
	ld, fabric, err := ln.StartLoomd(ctx, lab.Loomd{
		Bin: loomdBin, DataDir: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "loomd.sock"),
		BootDir: boot, Log: loomdLog, Args: []string{"--heartbeat", "1s", "--grace", "6s", "--ipv6-ra"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Process.Signal(syscall.SIGTERM) })

	srv := lab.Server{
		Name: "s1", MAC: lab.NewMAC(), UUID: lab.NewUUID(),
		CPUs: 2, MemoryMB: 1024, DiskGB: 3, Dir: filepath.Join(dir, "s1"), NoReboot: true,
	}
	start := time.Now()
	qemu, err := ln.Start(ctx, srv, "tap-s1")
	if err != nil {
		t.Fatal(err)
	}
	qemuDone := make(chan error, 1)
	go func() { qemuDone <- qemu.Wait() }()
	t.Cleanup(func() { qemu.Process.Kill() })
	dump := func() {
		t.Logf("serial console (last lines):\n%s", lab.Tail(srv.SerialLog(), 40))
		t.Logf("loomd log (last lines):\n%s", lab.Tail(loomdLog, 30))
	}

	n, err := lab.WaitNode(ctx, fabric, srv.MAC, 5*time.Minute, func(n api.Node) bool { return n.Phase == api.PhaseRegistered })
	if err != nil {
		select {
		case err := <-qemuDone:
			t.Logf("QEMU exited: %v\n%s", err, lab.Tail(filepath.Join(srv.Dir, "qemu.log"), 10))
		default:
		}
		dump()
		t.Fatal(err)
	}
	t.Logf("node %s Registered %.1fs after QEMU started", n.ID, time.Since(start).Seconds())

	if n.Inventory == nil {
		t.Fatalf("node %s has no inventory", n.ID)
	}
	inv := *n.Inventory
	type summary struct {
		CPUs   int
		Memory uint64
		UUID   string
		MACs   []string
		Disks  map[string]uint64
	}
	got := summary{CPUs: inv.CPU.Count, Memory: inv.Memory, UUID: inv.DMI.UUID, Disks: map[string]uint64{}}
	for _, nic := range inv.NICs {
		got.MACs = append(got.MACs, nic.MAC)
	}
	for _, d := range inv.Disks {
		got.Disks[d.Name] = d.SizeBytes
	}
	want := summary{CPUs: 2, Memory: 1024 << 20, UUID: srv.UUID, MACs: []string{srv.MAC}, Disks: map[string]uint64{"vda": 3 << 30}}
	if diff := cmp.Diff(want, got); diff != "" {
		dump()
		t.Errorf("inventory of %s differs from what QEMU was given (-want +got):\n%s", n.ID, diff)
	}
	if !strings.HasPrefix(n.IP, "10.79.0.") {
		t.Errorf("node IP = %q, want an address from loomd's pool 10.79.0.0/24", n.IP)
	}
	serial, _ := os.ReadFile(srv.SerialLog())
	if !strings.Contains(string(serial), "LOOM-MARK registered node="+n.ID) {
		dump()
		t.Errorf("serial console lacks the agent's marker %q", "LOOM-MARK registered node="+n.ID)
	}

	// Kill the server: it must go Unreachable after the grace period.
	qemu.Process.Kill()
	<-qemuDone
	if _, err := lab.WaitNode(ctx, fabric, srv.MAC, 30*time.Second, func(n api.Node) bool { return n.Phase == api.PhaseUnreachable }); err != nil {
		dump()
		t.Fatal(err)
	}
}
