// Package vmtest is the harness every VM test uses: the one skip-or-fail
// gate (root, QEMU, the built OS images, extra tools; LOOM_REQUIRE_VM=1
// turns a skip into a failure, -short skips them all), the repository's
// build outputs, Loom's binaries built once per test process, and a
// streaming Expect on a serial console.
//
// The lab itself (namespaces, bridge, taps, loomd, QEMU servers) is
// package lab; vmtest is what a test needs around it.
package vmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
)

// Required reports whether LOOM_REQUIRE_VM=1: a VM test that cannot run
// fails instead of skipping (CI sets it).
func Required() bool { return os.Getenv("LOOM_REQUIRE_VM") == "1" }

// Require skips t when the lab cannot run here (not root, no QEMU, or a
// problem in extra, such as Built's), saying why, unless LOOM_REQUIRE_VM=1,
// in which case it fails t. `go test -short` skips every VM test (the fast
// loop). It also sweeps what interrupted test runs left behind and marks
// this process as the owner of what it starts (lab.Claim).
func Require(t testing.TB, extra ...error) {
	t.Helper()
	if testing.Short() {
		if Required() {
			t.Fatal("LOOM_REQUIRE_VM=1 asks for the VM tests, -short skips them: drop one")
		}
		t.Skip("skipping VM test in -short mode")
	}
	lab.Claim()
	var problems []string
	if err := lab.Prereqs(); err != nil {
		problems = append(problems, err.Error())
	}
	for _, e := range extra {
		if e != nil {
			problems = append(problems, e.Error())
		}
	}
	if len(problems) == 0 {
		return
	}
	gate(t, "the VM test cannot run", strings.Join(problems, "; "))
}

// RequireGuest is Require for tests that run guest VMs: the guest OS from
// `make images` (and the other build outputs in extra) must be there. It
// returns how guests run here (LOOM_ACCEL, probed once per machine); a kvm
// asked for that cannot run a guest fails t at once with the probe's reason.
func RequireGuest(t testing.TB, extra ...string) api.Accel {
	t.Helper()
	Require(t, Built(append([]string{"build/guest/vmlinuz", "build/guest/initramfs.cpio.xz"}, extra...)...))
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	v, err := lab.DecideAccel(context.Background(), root, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guests run under %s", v)
	return v
}

// RequireTools skips t (or fails it under LOOM_REQUIRE_VM=1) unless every
// named program is on PATH; hint says how to get them. For tests that run
// peer tools (ipmi_sim, tftp, atftp) but no VM.
func RequireTools(t testing.TB, hint string, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		gate(t, "a tool the test needs is missing", fmt.Sprintf("%s not found (%s)", strings.Join(missing, ", "), hint))
	}
}

func gate(t testing.TB, what, why string) {
	t.Helper()
	if Required() {
		t.Fatalf("LOOM_REQUIRE_VM=1 but %s: %s", what, why)
	}
	t.Skipf("skipping: %s (set LOOM_REQUIRE_VM=1 to make this a failure)", why)
}

var (
	rootOnce sync.Once
	root     string
	rootErr  error
)

// Root is the repository's root: the nearest directory above the test's
// working directory that holds go.mod.
func Root() (string, error) {
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				root = dir
				return
			}
			up := filepath.Dir(dir)
			if up == dir {
				rootErr = errors.New("no go.mod above the working directory")
				return
			}
			dir = up
		}
	})
	return root, rootErr
}

// Path is p (relative to the repository root) as an absolute path.
func Path(p string) string {
	r, err := Root()
	if err != nil {
		return p
	}
	return filepath.Join(r, p)
}

// Built says which of the build outputs (paths relative to the repository
// root, such as build/guest/vmlinuz) are missing, and which make target
// makes them; nil when all are there. Pass it to Require.
func Built(paths ...string) error {
	var missing []string
	for _, p := range paths {
		if _, err := os.Stat(Path(p)); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s missing: run 'make initramfs images'", strings.Join(missing, ", "))
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// Binaries builds loomd, loom, loom-agent and lab once per test process and
// returns the directory holding them; Cleanup removes it (call it from
// TestMain after m.Run).
func Binaries(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		r, err := Root()
		if err != nil {
			binErr = err
			return
		}
		if binDir, binErr = os.MkdirTemp("", "loom-vmtest-bin-"); binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./fabric/cmd/loomd", "./fabric/cmd/loom", "./agent/cmd/loom-agent", "./scripts/lab/cmd/lab")
		cmd.Dir = r
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// Cleanup removes what Binaries built.
func Cleanup() {
	if binDir != "" {
		_ = os.RemoveAll(binDir) // a temp dir; nothing else to do if it stays
	}
}

// Main runs a VM test package's tests and removes what Binaries built:
// func TestMain(m *testing.M) { vmtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}
