package accel_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/agent/accel"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
	"github.com/loomfabric/loom/scripts/vmtest"
)

const root = "../.."

func abs(p string) string { a, _ := filepath.Abs(filepath.Join(root, p)); return a }

// bootGuest boots the guest OS with v's accelerator and waits for its
// agent's first marker.
func bootGuest(t *testing.T, v api.Accel, within time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	args := append([]string{"-machine", "q35"}, accel.Args(v)...)
	args = append(args, "-m", "256", "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
		"-device", "virtio-rng-pci", "-no-reboot",
		"-kernel", abs("build/guest/vmlinuz"), "-initrd", abs("build/guest/initramfs.cpio.xz"),
		"-append", "console=ttyS0 panic=-1", "-serial", "stdio")
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var last []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "LOOM-MARK start mode=guest") {
			return time.Since(t0)
		}
		last = append(last, sc.Text())
		if len(last) > 20 {
			last = last[1:]
		}
	}
	t.Fatalf("a guest under %s did not start its agent within %v; QEMU: %s; console:\n%s", v, within, stderr.String(), strings.Join(last, "\n"))
	return 0
}

// TestProbeOnThisMachine runs the real probe here (no cache) and checks
// that its verdict holds: under KVM a guest boots under KVM; under TCG the
// reason is given, names the probe's failure when a KVM device exists, and
// a guest boots under TCG.
func TestProbeOnThisMachine(t *testing.T) {
	vmtest.Require(t, vmtest.Built("build/maintenance/vmlinuz", "build/guest/vmlinuz", "build/guest/initramfs.cpio.xz"))
	t.Parallel()
	v, err := accel.Decide(context.Background(), accel.Config{Kernel: abs("build/maintenance/vmlinuz"), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verdict on this machine: %s", v)
	switch v.Accel {
	case "kvm":
		took := bootGuest(t, v, time.Minute)
		t.Logf("a guest under KVM started its agent in %.1fs", took.Seconds())
	case "tcg":
		if v.Reason == "" {
			t.Fatal("a TCG verdict without a reason")
		}
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
			f.Close()
			if !strings.Contains(v.Reason, "kvm probe failed") {
				t.Errorf("/dev/kvm opens but the verdict's reason is %q, want the probe's failure", v.Reason)
			}
		}
		took := bootGuest(t, v, 3*time.Minute)
		t.Logf("a guest under TCG started its agent in %.1fs", took.Seconds())
	default:
		t.Fatalf("verdict %+v: want kvm or tcg", v)
	}
}

// TestProbeRecognisesABootingKernel runs the probe's success path with the
// real kernel: a wrapper turns the probe's KVM into TCG, so the kernel
// really runs to its root-mount panic, and the probe must call it working.
func TestProbeRecognisesABootingKernel(t *testing.T) {
	vmtest.Require(t, vmtest.Built("build/maintenance/vmlinuz"))
	t.Parallel()
	dir := t.TempDir()
	qemu := filepath.Join(dir, "qemu-as-tcg")
	script := `#!/bin/sh
[ "$1" = --version ] && exec qemu-system-x86_64 --version
for a in "$@"; do
	case "$prev" in -accel) a=tcg ;; -cpu) a=max ;; esac
	prev=$a
	set -- "$@" "$a"; shift
done
exec qemu-system-x86_64 "$@"
`
	accel.WriteScript(t, qemu, script)
	dev := filepath.Join(dir, "kvm")
	os.WriteFile(dev, nil, 0o600)
	v, err := accel.Decide(context.Background(), accel.Config{QEMU: qemu, Device: dev, Kernel: abs("build/maintenance/vmlinuz"), Timeout: 2 * time.Minute, CPUs: []string{"host"}})
	if err != nil || v.Accel != "kvm" || v.CPU != "host" {
		t.Fatalf("a kernel that boots: verdict %s, %v; want kvm with -cpu host", v, err)
	}
	t.Logf("%s", v)
}

// TestForcedKVMFailsFast: with kvm asked for on a machine whose KVM cannot
// run a guest, the lab's decision (used by the lab, the benches and the VM
// tests) and a host agent fail within seconds, with the probe's reason.
func TestForcedKVMFailsFast(t *testing.T) {
	vmtest.Require(t, vmtest.Built("build/maintenance/vmlinuz", "build/guest/vmlinuz", "build/guest/initramfs.cpio.xz"))
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm here: KVM is absent, not broken (the probe's no-device path is covered by TestDecide)")
	}
	t.Parallel()
	ctx := context.Background()
	auto, err := lab.DecideAccel(ctx, root, "auto", nil)
	if err != nil {
		t.Fatal(err)
	}
	if auto.Accel == "kvm" {
		t.Skipf("KVM works here (%s): nothing to fail", auto)
	}
	t0 := time.Now()
	_, err = lab.DecideAccel(ctx, root, "kvm", nil)
	if !errors.Is(err, accel.ErrNoKVM) || !strings.Contains(err.Error(), "kvm probe failed") {
		t.Errorf("LOOM_ACCEL=kvm on broken KVM: %v, want ErrNoKVM with the probe's reason", err)
	}
	if el := time.Since(t0); el > 30*time.Second {
		t.Errorf("LOOM_ACCEL=kvm took %v to fail", el)
	}

	// A host agent told --accel kvm exits at once, saying why.
	dir := t.TempDir()
	bin := filepath.Join(vmtest.Binaries(t), "loom-agent")
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("t"), 0o600)
	actx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	agent := exec.CommandContext(actx, bin, "host", "--accel", "kvm", "--accel-cache", filepath.Join(dir, "cache"),
		"--fabric", "http://127.0.0.1:9", "--token-file", tok, "--ip", "127.0.0.1", "--guest-dir", filepath.Join(dir, "guests"),
		"--guest-kernel", abs("build/guest/vmlinuz"), "--guest-initrd", abs("build/guest/initramfs.cpio.xz"))
	t0 = time.Now()
	out, err := agent.CombinedOutput()
	if actx.Err() != nil {
		t.Fatalf("loom-agent host --accel kvm still running after 90s; output:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "kvm cannot run a guest here") || !strings.Contains(string(out), "kvm probe failed") {
		t.Errorf("loom-agent host --accel kvm: %v, output:\n%s\nwant a non-zero exit naming the probe's failure", err, out)
	}
	t.Logf("the host agent refused --accel kvm after %.1fs", time.Since(t0).Seconds())
}
