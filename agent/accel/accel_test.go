package accel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
)

// fakeQEMU writes a shell script standing in for qemu-system-x86_64: it
// answers --version with version and, asked to boot, does what behave
// says for its -cpu model (run, abort, hang, hang-silent, exit0), logging
// each boot's model to dir/calls.
func fakeQEMU(t *testing.T, dir, version string, behave map[string]string) string {
	t.Helper()
	var cases strings.Builder
	for cpu, b := range behave {
		var act string
		switch b {
		case "run":
			act = `echo "[    0.000000] Linux version 6.1.0"; echo "Kernel panic - not syncing: VFS: Unable to mount root fs"; exit 0`
		case "abort":
			act = `echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2; kill -ABRT $$`
		case "hang":
			act = `echo "Probing EDD (edd=off to disable)... ok"; exec sleep 30`
		case "hang-silent":
			act = `exec sleep 30`
		case "exit0":
			act = `echo "SeaBIOS"; exit 0`
		default:
			t.Fatalf("unknown behaviour %q", b)
		}
		fmt.Fprintf(&cases, "%q) %s ;;\n", cpu, act)
	}
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = --version ]; then echo "QEMU emulator version %s"; exit 0; fi
cpu=""; prev=""
for a in "$@"; do [ "$prev" = -cpu ] && cpu=$a; prev=$a; done
echo "$cpu" >> %q
case "$cpu" in
%s*) echo "unexpected cpu $cpu" >&2; exit 3 ;;
esac
`, version, filepath.Join(dir, "calls"), cases.String())
	p := filepath.Join(dir, "qemu-"+version)
	WriteScript(t, p, script)
	return p
}

// WriteScript puts an executable script at p without this process ever
// holding it open for writing. A test that writes an executable and runs
// it while parallel tests fork can fail with "text file busy": a child
// forked between the write's open and close inherits the descriptor until
// it execs, and Linux refuses to exec a file open for writing. So the
// text goes to a scratch file and cp, a process of its own, makes p.
func WriteScript(t testing.TB, p, text string) {
	t.Helper()
	scratch := p + ".text"
	if err := os.WriteFile(scratch, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", scratch, p).CombinedOutput(); err != nil {
		t.Fatalf("cp %s: %v: %s", p, err, out)
	}
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func calls(dir string) []string {
	b, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if len(b) == 0 {
		return nil
	}
	return strings.Fields(string(b))
}

// fakeEnv is a directory with a KVM device stand-in and a probe kernel.
func fakeEnv(t *testing.T) (dir, device, kernel string) {
	dir = t.TempDir()
	device, kernel = filepath.Join(dir, "kvm"), filepath.Join(dir, "vmlinuz")
	for _, f := range []string{device, kernel} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, device, kernel
}

func TestDecide(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		mode      Mode
		noDevice  bool
		behave    map[string]string
		want      api.Accel // Reason is checked by reasonHas
		reasonHas []string
		wantCalls []string
		wantErr   error
	}{
		{name: "host runs", behave: map[string]string{"host": "run"},
			want: api.Accel{Accel: "kvm", CPU: "host"}, reasonHas: []string{"booted a kernel with -cpu host"}, wantCalls: []string{"host"}},
		{name: "host aborts, without arch-capabilities runs", behave: map[string]string{"host": "abort", "host,-arch-capabilities": "run"},
			want: api.Accel{Accel: "kvm", CPU: "host,-arch-capabilities"}, wantCalls: []string{"host", "host,-arch-capabilities"}},
		{name: "abort then hang: tcg with both reasons", behave: map[string]string{"host": "abort", "host,-arch-capabilities": "hang"},
			want:      api.Accel{Accel: "tcg", CPU: "max"},
			reasonHas: []string{"kvm probe failed", "-cpu host: qemu: signal: aborted", "failed to set MSR 0x10a", `-cpu host,-arch-capabilities: the kernel stopped after "Probing EDD`},
			wantCalls: []string{"host", "host,-arch-capabilities"}},
		{name: "silent hangs", behave: map[string]string{"host": "hang-silent", "host,-arch-capabilities": "hang-silent"},
			want: api.Accel{Accel: "tcg", CPU: "max"}, reasonHas: []string{"no console output in 500ms"}, wantCalls: []string{"host", "host,-arch-capabilities"}},
		{name: "exits without the kernel running", behave: map[string]string{"host": "exit0", "host,-arch-capabilities": "exit0"},
			want: api.Accel{Accel: "tcg", CPU: "max"}, reasonHas: []string{"QEMU exited before the kernel ran"}, wantCalls: []string{"host", "host,-arch-capabilities"}},
		{name: "no device: no probe", noDevice: true, behave: map[string]string{"host": "run"},
			want: api.Accel{Accel: "tcg", CPU: "max"}, reasonHas: []string{"no usable KVM device"}},
		{name: "tcg asked for: no probe", mode: TCG, behave: map[string]string{"host": "run"},
			want: api.Accel{Accel: "tcg", CPU: "max"}, reasonHas: []string{"tcg asked for"}},
		{name: "kvm asked for and working", mode: KVM, behave: map[string]string{"host": "run"},
			want: api.Accel{Accel: "kvm", CPU: "host"}, wantCalls: []string{"host"}},
		{name: "kvm asked for and broken: an error with the reason", mode: KVM, behave: map[string]string{"host": "abort", "host,-arch-capabilities": "hang"},
			want: api.Accel{Accel: "tcg", CPU: "max"}, reasonHas: []string{"failed to set MSR"}, wantCalls: []string{"host", "host,-arch-capabilities"}, wantErr: ErrNoKVM},
		{name: "kvm asked for, no device", mode: KVM, noDevice: true, behave: map[string]string{"host": "run"},
			want: api.Accel{Accel: "tcg", CPU: "max"}, reasonHas: []string{"no usable KVM device"}, wantErr: ErrNoKVM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, device, kernel := fakeEnv(t)
			if tc.noDevice {
				device = filepath.Join(dir, "no-such-kvm")
			}
			c := Config{Mode: tc.mode, QEMU: fakeQEMU(t, dir, "7.2.0", tc.behave), Kernel: kernel, Device: device, Timeout: 300 * time.Millisecond, FirstOutput: 500 * time.Millisecond}
			t0 := time.Now()
			got, err := Decide(context.Background(), c)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Decide() error = %v, want %v", err, tc.wantErr)
			}
			if el := time.Since(t0); el > 5*time.Second {
				t.Errorf("Decide() took %v: a hung probe must end at its timeout", el)
			}
			for _, s := range tc.reasonHas {
				if !strings.Contains(got.Reason, s) {
					t.Errorf("Decide() reason = %q, want it to contain %q", got.Reason, s)
				}
				if tc.wantErr != nil && !strings.Contains(err.Error(), s) {
					t.Errorf("Decide() error = %q, want it to contain %q", err, s)
				}
			}
			if got.Reason == "" {
				t.Error("Decide() gave no reason")
			}
			got.Reason = ""
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Decide() verdict (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantCalls, calls(dir)); diff != "" {
				t.Errorf("CPU models probed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCache(t *testing.T) {
	t.Parallel()
	dir, device, kernel := fakeEnv(t)
	cache := filepath.Join(dir, "cache")
	broken := map[string]string{"host": "abort", "host,-arch-capabilities": "hang"}
	c := Config{QEMU: fakeQEMU(t, dir, "7.2.0", broken), Kernel: kernel, Device: device, CacheDir: cache, Timeout: 300 * time.Millisecond, FirstOutput: 300 * time.Millisecond}
	ctx := context.Background()

	first, err := Decide(ctx, c)
	if err != nil || first.Accel != "tcg" {
		t.Fatalf("first Decide() = %v, %v; want tcg", first, err)
	}
	if n := len(calls(dir)); n != 2 {
		t.Fatalf("first Decide() probed %d models, want 2", n)
	}

	// Hit: the same machine gets the same verdict without a probe.
	t0 := time.Now()
	again, err := Decide(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("cached verdict differs (-first +again):\n%s", diff)
	}
	if n := len(calls(dir)); n != 2 {
		t.Errorf("a cache hit probed again (%d probes in all)", n)
	}
	if el := time.Since(t0); el > 200*time.Millisecond {
		t.Errorf("a cache hit took %v", el)
	}
	// Forced kvm on a cached failure fails at once, with the reason.
	kc := c
	kc.Mode = KVM
	if _, err := Decide(ctx, kc); !errors.Is(err, ErrNoKVM) || !strings.Contains(err.Error(), "failed to set MSR") {
		t.Errorf("kvm asked for on a cached failure: %v, want ErrNoKVM with the probe's reason", err)
	}

	// A new QEMU (version) invalidates the verdict: it probes, and this
	// one runs guests.
	c.QEMU = fakeQEMU(t, dir, "8.2.0", map[string]string{"host": "run"})
	upgraded, err := Decide(ctx, c)
	if err != nil || upgraded.Accel != "kvm" || upgraded.CPU != "host" {
		t.Fatalf("after a QEMU upgrade Decide() = %v, %v; want kvm host", upgraded, err)
	}
	if got := calls(dir); len(got) != 3 || got[2] != "host" {
		t.Errorf("probes after the upgrade: %v, want one more (host)", got)
	}

	// Another probe kernel invalidates it too.
	if err := os.WriteFile(kernel, []byte("another kernel"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Decide(ctx, c); err != nil {
		t.Fatal(err)
	}
	if n := len(calls(dir)); n != 4 {
		t.Errorf("a new kernel did not cause a probe (%d probes in all, want 4)", n)
	}

	// An interrupted probe is never cached.
	os.Remove(filepath.Join(cache, "accel.json"))
	c.QEMU = fakeQEMU(t, dir, "9.0.0", map[string]string{"host": "hang-silent", "host,-arch-capabilities": "hang-silent"})
	c.Timeout = 10 * time.Second
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := Decide(cctx, c); err == nil {
		t.Error("an interrupted probe returned a verdict")
	}
	if _, err := os.Stat(filepath.Join(cache, "accel.json")); !os.IsNotExist(err) {
		t.Errorf("an interrupted probe was cached (%v)", err)
	}
}

func TestKernelVersion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := make([]byte, 0x400)
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x20e:], 0x100) // string at 0x300
	copy(img[0x300:], "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\x00")
	p := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(p, img, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := KernelVersion(p)
	if want := "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP"; err != nil || got != want {
		t.Errorf("KernelVersion(bzImage) = %q, %v; want %q", got, err, want)
	}
	other := filepath.Join(dir, "blob")
	os.WriteFile(other, []byte("not a kernel"), 0o600)
	if got, err := KernelVersion(other); err != nil || !strings.HasPrefix(got, "blob size 12 ") {
		t.Errorf("KernelVersion(not a bzImage) = %q, %v; want it named by size", got, err)
	}
	if _, err := KernelVersion(filepath.Join(dir, "missing")); err == nil {
		t.Error("KernelVersion(missing) succeeded")
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": Auto, "auto": Auto, "KVM": KVM, " tcg ": TCG} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMode("hvf"); err == nil || !strings.Contains(err.Error(), "want auto, kvm or tcg") {
		t.Errorf("ParseMode(hvf) = %v, want an error listing the choices", err)
	}
}

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		v    api.Accel
		want []string
	}{
		{api.Accel{Accel: "kvm", CPU: "host,-arch-capabilities"}, []string{"-accel", "kvm", "-cpu", "host,-arch-capabilities"}},
		{api.Accel{Accel: "tcg", CPU: "max"}, []string{"-accel", "tcg", "-cpu", "max"}},
		{api.Accel{}, []string{"-accel", "tcg", "-cpu", "max"}},
	} {
		if diff := cmp.Diff(tc.want, Args(tc.v)); diff != "" {
			t.Errorf("Args(%+v) (-want +got):\n%s", tc.v, diff)
		}
	}
}
