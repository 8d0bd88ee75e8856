package bmc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
	"github.com/loomfabric/loom/scripts/vmtest"
)

// ipmiSim runs OpenIPMI's BMC simulator (Debian's openipmi) on loopback,
// with user admin, whose chassis is a script keeping the power state and
// boot device in files (the chassis_control program protocol: "get NAME",
// "set NAME VALUE"), and returns its address and that directory.
func ipmiSim(t *testing.T) (addr, state string) {
	t.Helper()
	vmtest.RequireTools(t, "make deps installs openipmi", "ipmi_sim")
	dir := t.TempDir()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	script := filepath.Join(dir, "chassis")
	os.WriteFile(script, []byte(`#!/bin/sh
cd "$(dirname "$0")"
[ -f power ] || echo 0 > power
[ -f boot ] || echo none > boot
case "$1" in
get) shift; for n in "$@"; do echo "$n:$(cat "$n")"; done ;;
set) shift; while [ $# -ge 2 ]; do echo "$2" > "$1"; shift 2; done ;;
*) exit 1 ;;
esac
`), 0o755)
	args, err := lab.IPMISim(dir, fmt.Sprintf("127.0.0.1:%d", port), "admin", "s3cret", script)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	log, _ := os.Create(filepath.Join(dir, "sim.log"))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(500 * time.Millisecond)
	return fmt.Sprintf("127.0.0.1:%d", port), dir
}

func read(t *testing.T, dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b))
}

// TestIPMI drives OpenIPMI's simulator over RMCP+: status, on, pxe-once
// (the boot device reaches the chassis), cycle, off, and a wrong password
// refused with ErrAuth.
func TestIPMI(t *testing.T) {
	addr, dir := ipmiSim(t)
	ctx := context.Background()
	tg := Target{BMC: api.BMC{Protocol: api.BMCIPMI, Address: addr}, Username: "admin", Password: "s3cret"}
	step := func(op Op, want, power string) {
		t.Helper()
		got, err := Do(ctx, tg, op)
		if err != nil || got != want {
			t.Fatalf("%s = %q, %v; want %q", op, got, err, want)
		}
		if p := read(t, dir, "power"); p != power {
			t.Fatalf("after %s the chassis power is %q, want %q", op, p, power)
		}
	}
	step(OpStatus, "Off", "0")
	step(OpOn, "On", "1")
	step(OpStatus, "On", "1")
	step(OpPXEOnce, "On", "1")
	if b := read(t, dir, "boot"); b != "pxe" {
		t.Errorf("boot device after pxe-once: %q, want pxe", b)
	}
	step(OpCycle, "On", "1") // off, then on again a second later
	step(OpOff, "Off", "0")
	step(OpCycle, "On", "1") // a cycle of a server that is off powers it on

	bad := tg
	bad.Password = "wrong"
	if _, err := Do(ctx, bad, OpStatus); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong password: %v, want ErrAuth", err)
	}
	if _, err := Do(ctx, Target{BMC: api.BMC{Protocol: api.BMCIPMI, Address: "127.0.0.1:1"}, Username: "admin", Password: "x"}, OpStatus); err == nil || errors.Is(err, ErrAuth) {
		t.Errorf("no BMC there: %v, want an error that is not ErrAuth", err)
	}
	if h, p, err := ipmiHostPort("ipmi://10.0.0.5"); h != "10.0.0.5" || p != 623 || err != nil {
		t.Errorf("ipmiHostPort = %s %d %v", h, p, err)
	}
	if !strings.Contains(fmt.Sprint(ErrAuth), "refused") {
		t.Error(ErrAuth)
	}
}
