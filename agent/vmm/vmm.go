// Package vmm runs guest VMs with QEMU, driven over QMP
// (github.com/digitalocean/go-qemu/qmp).
//
// Each guest lives in Dir/<name>/: qmp.sock (QMP), channel.sock (the
// virtio-serial port "org.loom.channel.0", QEMU listening), console.log
// (serial console), qemu.pid. A guest has no NIC at all (-nic none): the
// channel is its only way out. QEMU runs in a session of its own, so it
// outlives a restart of the host agent, which then adopts it through its
// pidfile and QMP socket instead of killing and recreating it.
package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/loomfabric/loom/agent/accel"
	"github.com/loomfabric/loom/agent/atomicfile"
	"github.com/loomfabric/loom/fabric/api"
)

// ChannelName is the virtio-serial port name the guest looks for.
const ChannelName = "org.loom.channel.0"

// Spec is what a guest is made of.
type Spec struct {
	Name     string
	VCPUs    int // default 1
	MemoryMB int // default 256
	Kernel   string
	Initrd   string
	// Cmdline is appended to "console=ttyS0 panic=-1 loom.instance=NAME".
	Cmdline string
	// Disk, if set, is a qcow2 file attached as the guest's virtio disk.
	Disk string `json:",omitempty"`
	// ExtraArgs are appended to QEMU's arguments (benchmarks, debugging).
	ExtraArgs []string `json:",omitempty"`
	// Incoming, if set, is a state saved from a guest of the same machine
	// (VCPUs, memory, devices, kernel, disk contents): the guest resumes
	// from it instead of booting. The kernel command line in force is then
	// the saved guest's; Cmdline takes effect at the guest's next reset.
	Incoming *Saved `json:"-"`
}

// Manager starts and adopts guests.
type Manager struct {
	// Dir holds one directory per guest. Required.
	Dir string
	// QEMU is the binary. Default "qemu-system-x86_64".
	QEMU string
	// Accel is how guests run, as accel.Decide found. Default: TCG.
	Accel api.Accel
	Log   *slog.Logger
}

// VM is a running guest.
type VM struct {
	Spec Spec
	Dir  string
	PID  int
	mon  *qmp.SocketMonitor
}

func (m *Manager) dir(name string) string { return filepath.Join(m.Dir, name) }

// Args returns QEMU's command line for a guest (pure, for tests).
func (m *Manager) Args(s Spec) []string {
	d := m.dir(s.Name)
	acc := accel.Args(m.Accel)
	if acc[1] == "tcg" {
		acc[1] = "tcg,tb-size=64" // bound the translation cache: it counts against the guest's memory ceiling
	}
	args := append([]string{
		"-name", "loom-guest-" + s.Name,
		"-machine", "q35"}, acc...)
	args = append(args,
		"-smp", strconv.Itoa(max(s.VCPUs, 1)), "-m", strconv.Itoa(cmp0(s.MemoryMB, 256)),
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-nic", "none",
		"-kernel", s.Kernel, "-initrd", s.Initrd,
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 loom.instance="+s.Name+" "+s.Cmdline),
		"-serial", "file:"+filepath.Join(d, "console.log"),
		"-device", "virtio-rng-pci",
		// A new generation ID at every start: a guest resumed from a saved
		// state reseeds its kernel's random state from it (Linux's vmgenid).
		"-device", "vmgenid,guid=auto",
		"-device", "pvpanic",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=ch0,path="+filepath.Join(d, "channel.sock")+",server=on,wait=off",
		"-device", "virtserialport,chardev=ch0,name="+ChannelName,
		"-qmp", "unix:"+filepath.Join(d, "qmp.sock")+",server=on,wait=off",
		"-pidfile", filepath.Join(d, "qemu.pid"),
	)
	if s.Disk != "" {
		args = append(args, "-drive", "file="+s.Disk+",if=virtio,format=qcow2,"+diskCache(s.Disk))
	}
	if s.Incoming != nil {
		args = append(args, "-S", "-incoming", "defer")
	}
	return append(args, s.ExtraArgs...)
}

// diskCache bypasses the host's page cache (O_DIRECT: a guest's writes are
// its own, not the host's memory) where the file system allows it; a RAM
// root (tmpfs) does not.
func diskCache(file string) string {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return "cache=writeback"
	}
	_ = f.Close() // a probe, opened read-only
	return "cache=none,aio=threads"
}

func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Start boots a guest and connects to its QMP socket.
func (m *Manager) Start(ctx context.Context, s Spec) (*VM, error) {
	if s.Name == "" || s.Kernel == "" || s.Initrd == "" {
		return nil, errors.New("vmm: a guest needs Name, Kernel and Initrd")
	}
	d := m.dir(s.Name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []string{"qmp.sock", "channel.sock", "qemu.pid", "incoming.sock", "migrate.sock"} {
		if err := os.Remove(filepath.Join(d, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("vmm: %s: clearing the last run's %s: %w", s.Name, f, err)
		}
	}
	bin := m.QEMU
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	logf, err := os.Create(filepath.Join(d, "qemu.log"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = logf.Close() }() // QEMU holds its own descriptor; ours only set it up
	cmd := exec.Command(bin, m.Args(s)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmm: starting QEMU for %s: %w", s.Name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // reap; how it ended is read from QMP events and the log
	v := &VM{Spec: s, Dir: d, PID: cmd.Process.Pid}
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-exited: // QEMU refused to start: no need to wait for its socket
			cancel()
		case <-cctx.Done():
		}
	}()
	err = v.connect(cctx, 15*time.Second)
	if err == nil && s.Incoming != nil {
		rctx, rcancel := context.WithTimeout(cctx, 2*time.Minute)
		err = v.restore(rctx, *s.Incoming, exited)
		rcancel()
	}
	cancel()
	select {
	case <-exited:
		err = errors.New("QEMU exited at start")
	default:
	}
	if err == nil {
		// Adopt reads the spec back after a host agent restart: a guest
		// without one is not started.
		if err = writeSpec(d, s); err != nil {
			_ = v.Close()
		}
	}
	if err != nil {
		if kerr := cmd.Process.Kill(); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
			err = errors.Join(err, fmt.Errorf("killing QEMU: %w", kerr))
		}
		// Gone before we return: a caller that starts again (a cold boot
		// after a failed resume) needs its disk's lock free.
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
		b, _ := os.ReadFile(filepath.Join(d, "qemu.log"))
		return nil, fmt.Errorf("vmm: %s: %w (qemu: %s)", s.Name, err, strings.TrimSpace(string(b)))
	}
	return v, nil
}

// Adopt reconnects to a guest a previous host agent started.
func (m *Manager) Adopt(ctx context.Context, name string) (*VM, error) {
	d := m.dir(name)
	b, err := os.ReadFile(filepath.Join(d, "qemu.pid"))
	if err != nil {
		return nil, fmt.Errorf("vmm: adopting %s: %w", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("vmm: adopting %s: pidfile: %w", name, err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "loom-guest-"+name) {
		return nil, fmt.Errorf("vmm: adopting %s: process %d is not its QEMU any more", name, pid)
	}
	spec, err := readSpec(d)
	if err != nil {
		return nil, fmt.Errorf("vmm: adopting %s: %w", name, err)
	}
	v := &VM{Spec: spec, Dir: d, PID: pid}
	if err := v.connect(ctx, 5*time.Second); err != nil {
		return nil, fmt.Errorf("vmm: adopting %s: %w", name, err)
	}
	return v, nil
}

func (v *VM) connect(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	var err error
	for time.Now().Before(deadline) {
		var mon *qmp.SocketMonitor
		mon, err = qmp.NewSocketMonitor("unix", filepath.Join(v.Dir, "qmp.sock"), 2*time.Second)
		if err == nil {
			if err = mon.Connect(); err == nil {
				v.mon = mon
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("QMP: %w", err)
}

// run runs a QMP command without arguments.
func (v *VM) run(cmd string) ([]byte, error) { return v.execArgs(cmd, nil) }

// Status is QEMU's run state ("running", "paused", "shutdown", …).
func (v *VM) Status() (string, error) {
	out, err := v.run("query-status")
	if err != nil {
		return "", err
	}
	var r struct {
		Return struct {
			Status string `json:"status"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return "", err
	}
	return r.Return.Status, nil
}

// Reboot resets the guest (system_reset).
func (v *VM) Reboot() error { _, err := v.run("system_reset"); return err }

// Stop asks the guest to power down (system_powerdown) and quits QEMU if
// it is still there after grace.
func (v *VM) Stop(grace time.Duration) error {
	// If QMP does not take these, the guest is still ended: by quit, then
	// by SIGKILL.
	_, _ = v.run("system_powerdown")
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !v.Alive() {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	_, _ = v.run("quit")
	for range 50 {
		if !v.Alive() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return syscall.Kill(v.PID, syscall.SIGKILL)
}

// Alive reports whether the QEMU process still runs.
func (v *VM) Alive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", v.PID))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// Events streams QMP events (SHUTDOWN, RESET, STOP, GUEST_PANICKED, …).
func (v *VM) Events(ctx context.Context) (<-chan qmp.Event, error) { return v.mon.Events(ctx) }

// Channel connects to the guest's channel socket.
func (v *VM) Channel() (net.Conn, error) {
	return net.Dial("unix", filepath.Join(v.Dir, "channel.sock"))
}

// Close drops the QMP connection (the guest keeps running).
func (v *VM) Close() error { return v.mon.Disconnect() }

func writeSpec(dir string, s Spec) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, "spec.json"), b, 0o600); err != nil {
		return fmt.Errorf("recording the guest's spec: %w", err)
	}
	return nil
}

func readSpec(dir string) (Spec, error) {
	var s Spec
	b, err := os.ReadFile(filepath.Join(dir, "spec.json"))
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err != nil {
		return Spec{}, fmt.Errorf("the guest's spec.json: %w", err)
	}
	return s, nil
}

// Kill ends QEMU at once (a template after its save) and drops the QMP
// connection.
func (v *VM) Kill() {
	if v.Alive() {
		_ = syscall.Kill(v.PID, syscall.SIGKILL) // gone already is as good
		for range 100 {
			if !v.Alive() {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if v.mon != nil {
		_ = v.mon.Disconnect() // the process has gone
		v.mon = nil
	}
}
