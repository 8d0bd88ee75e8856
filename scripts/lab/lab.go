// Package lab builds a lab of QEMU "servers" on one Linux box: a network
// namespace of its own with a bridge, one tap per server, and QEMU machines
// that network-boot (-boot n, QEMU's iPXE ROM) from whatever serves DHCP on
// the bridge. Used by `make lab` (scripts/lab/cmd/lab) and by the VM tests.
//
// Everything is made with iproute2 and qemu-system-x86_64 and needs root.
// Names carry a "loom-" prefix and a random suffix; Close removes the
// namespace, which takes the bridge and taps with it.
package lab

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/agent/accel"
	"github.com/loomfabric/loom/fabric/api"
)

// Prereqs says what is missing to run a lab, or nil.
func Prereqs() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, c := range []string{"ip", "qemu-system-x86_64", "qemu-img"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if _, err := os.Stat("/usr/lib/ipxe/qemu/efi-virtio.rom"); err != nil {
		if _, err2 := os.Stat("/usr/share/qemu/efi-virtio.rom"); err2 != nil {
			missing = append(missing, "QEMU's iPXE ROMs (ipxe-qemu)")
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "/dev/net/tun")
	}
	if len(missing) > 0 {
		return fmt.Errorf("lab needs: %s", strings.Join(missing, ", "))
	}
	return nil
}

// Suffix returns a short random string for unique names.
func Suffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Net is a namespace with a bridge.
type Net struct {
	NS     string
	Bridge string
	// Addr is the bridge's address and prefix, e.g. 10.77.0.1/24.
	Addr netip.Prefix
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewNet makes namespace ns with bridge "br0" at addr. IPv6 stays on with a
// link-local address so loomd --ipv6-ra can stop iPXE waiting for adverts.
func NewNet(ctx context.Context, ns string, addr netip.Prefix) (*Net, error) {
	n := &Net{NS: ns, Bridge: "br0", Addr: addr}
	if err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "link", "add", n.Bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"},
		{"ip", "-n", ns, "addr", "add", addr.String(), "dev", n.Bridge},
		{"ip", "-n", ns, "link", "set", n.Bridge, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, errors.Join(err, n.Close())
		}
	}
	return n, nil
}

// NewRoutedNet makes namespace ns with bridge "br0" at addr, a subnet
// behind a router: ns routes between its bridge and n's bridge, which it
// joins through a veth pair whose end in ns has the address upstream (in
// n's subnet). n gets a route to addr's subnet through it. A DHCP relay
// in ns (Command) forwards its servers' requests to a server on n.
func (n *Net) NewRoutedNet(ctx context.Context, ns string, addr, upstream netip.Prefix) (*Net, error) {
	r, err := NewNet(ctx, ns, addr)
	if err != nil {
		return nil, err
	}
	veth := "vr" + Suffix()
	for _, s := range [][]string{
		{"ip", "-n", n.NS, "link", "add", veth, "type", "veth", "peer", "name", "up0", "netns", ns},
		{"ip", "-n", n.NS, "link", "set", veth, "master", n.Bridge},
		{"ip", "-n", n.NS, "link", "set", veth, "up"},
		{"ip", "-n", ns, "addr", "add", upstream.String(), "dev", "up0"},
		{"ip", "-n", ns, "link", "set", "up0", "up"},
		{"ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
		{"ip", "-n", n.NS, "route", "add", addr.Masked().String(), "via", upstream.Addr().String()},
	} {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, errors.Join(err, r.Close())
		}
	}
	return r, nil
}

// VethPair is two namespaces joined by a veth pair: a server side and a
// client side (benchmarks: a server in one, its load generator in the
// other, so traffic crosses a real link).
type VethPair struct {
	Server, Client     string // namespaces
	ServerIf, ClientIf string // the veth ends, "vs" and "vc"
}

// NewVethPair makes namespaces prefix+"-s" and prefix+"-c" joined by a veth
// pair with the given addresses (e.g. "198.18.0.1/15").
func NewVethPair(ctx context.Context, prefix, serverAddr, clientAddr string) (*VethPair, error) {
	p := &VethPair{Server: prefix + "-s", Client: prefix + "-c", ServerIf: "vs", ClientIf: "vc"}
	tmpS, tmpC := "vs"+Suffix(), "vc"+Suffix()
	for _, s := range [][]string{
		{"netns", "add", p.Server}, {"netns", "add", p.Client},
		{"link", "add", tmpS, "type", "veth", "peer", "name", tmpC},
		{"link", "set", tmpS, "netns", p.Server, "name", p.ServerIf},
		{"link", "set", tmpC, "netns", p.Client, "name", p.ClientIf},
		{"-n", p.Server, "addr", "add", serverAddr, "dev", p.ServerIf},
		{"-n", p.Client, "addr", "add", clientAddr, "dev", p.ClientIf},
		{"-n", p.Server, "link", "set", p.ServerIf, "up"}, {"-n", p.Server, "link", "set", "lo", "up"},
		{"-n", p.Client, "link", "set", p.ClientIf, "up"}, {"-n", p.Client, "link", "set", "lo", "up"},
	} {
		if err := run(ctx, "ip", s...); err != nil {
			return nil, errors.Join(err, p.Close())
		}
	}
	return p, nil
}

// Close deletes both namespaces.
func (p *VethPair) Close() error {
	return errors.Join(
		run(context.Background(), "ip", "netns", "del", p.Server),
		run(context.Background(), "ip", "netns", "del", p.Client))
}

// Close deletes the namespace and everything in it.
func (n *Net) Close() error {
	return run(context.Background(), "ip", "netns", "del", n.NS)
}

// AddTap adds a tap device to the bridge.
func (n *Net) AddTap(ctx context.Context, tap string) error {
	for _, s := range [][]string{
		{"ip", "-n", n.NS, "tuntap", "add", "dev", tap, "mode", "tap"},
		{"ip", "-n", n.NS, "link", "set", tap, "master", n.Bridge},
		{"ip", "-n", n.NS, "link", "set", tap, "up"},
	} {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// Command runs a program inside the namespace.
func (n *Net) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.NS, name}, args...)...)
}

// Server is one QEMU machine.
type Server struct {
	Name     string
	MAC      string // 52:54:00:…
	UUID     string // SMBIOS system UUID
	CPUs     int
	MemoryMB int
	DiskGB   int
	// Dir receives disk.qcow2, serial.log and qmp.sock.
	Dir string
	// NoReboot makes QEMU exit instead of rebooting (tests).
	NoReboot bool
	// Detach runs QEMU in a session of its own that outlives the caller;
	// otherwise QEMU dies with the caller.
	Detach bool
	// Accel is how QEMU runs (DecideAccel). Default: TCG.
	Accel api.Accel
	// Firmware is "bios" (SeaBIOS, the default) or "uefi" (OVMF, Debian's
	// ovmf package).
	Firmware string
	// NoOptionROM leaves the NIC without QEMU's iPXE option ROM, as on a
	// real server: the firmware's own PXE stack boots (UEFI), fetching the
	// first stage over TFTP.
	NoOptionROM bool
	// NIC is QEMU's network device: "virtio-net-pci" (the default) or
	// "e1000".
	NIC string
	// Off starts the server powered off (QEMU -S): it waits for its BMC
	// to power it on, as a server fresh in a rack does.
	Off bool
	// NVMe, if set, is a raw image attached as a second disk on QEMU's
	// NVMe controller (serial "loom-nvme").
	NVMe string
	// SATA, if set, is a raw image attached as a SATA disk on an AHCI
	// controller (serial "loom-sata").
	SATA string
	// Used fills the first 64 MiB of the fresh disk with 0xAB, as a disk
	// that held data (wipe tests).
	Used bool
	// NestedVirt keeps QEMU's emulated SVM/VMX in a server under TCG, for
	// a host OS that is to run guests (they run under that nested KVM).
	NestedVirt bool
}

// Kinds are the kinds of server the lab can start (Kind).
var Kinds = []string{"bios", "bios-e1000", "uefi", "uefi-ipxe"}

// Kind sets s up as one kind of server:
//   - bios: SeaBIOS, virtio-net with QEMU's iPXE option ROM;
//   - bios-e1000: SeaBIOS, an e1000 NIC with its iPXE option ROM;
//   - uefi: OVMF, virtio-net without an option ROM, so the firmware's own
//     PXE fetches the first stage over TFTP, as on a real server;
//   - uefi-ipxe: OVMF, virtio-net with QEMU's iPXE option ROM.
func (s *Server) Kind(kind string) error {
	switch kind {
	case "bios":
		s.Firmware, s.NIC, s.NoOptionROM = "bios", "", false
	case "bios-e1000":
		s.Firmware, s.NIC, s.NoOptionROM = "bios", "e1000", false
	case "uefi":
		s.Firmware, s.NIC, s.NoOptionROM = "uefi", "", true
	case "uefi-ipxe":
		s.Firmware, s.NIC, s.NoOptionROM = "uefi", "", false
	default:
		return fmt.Errorf("server kind %q: want one of %s", kind, strings.Join(Kinds, ", "))
	}
	return nil
}

// OVMF is Debian's UEFI firmware for QEMU: code (read-only) and the
// template of a machine's variable store.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// QEMULog is where QEMU's own output (its errors) goes.
func (s Server) QEMULog() string { return filepath.Join(s.Dir, "qemu.log") }

// SerialLog is where the server's console goes.
func (s Server) SerialLog() string { return filepath.Join(s.Dir, "serial.log") }

// QMP is the server's QMP socket.
func (s Server) QMP() string { return filepath.Join(s.Dir, "qmp.sock") }

// NewMAC returns a locally administered QEMU-style MAC.
func NewMAC() string {
	b := make([]byte, 3)
	rand.Read(b)
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}

// NewUUID returns a random version-4 UUID.
func NewUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func romfile(none bool) string {
	if none {
		return ",romfile="
	}
	return ""
}

// Start creates the server's tap and disk and starts QEMU in the namespace.
// The caller waits for (or kills) the returned command.
func (n *Net) Start(ctx context.Context, s Server, tap string) (*exec.Cmd, error) {
	if s.Name == "" || s.MAC == "" || s.Dir == "" {
		return nil, errors.New("lab: server needs Name, MAC and Dir")
	}
	if s.CPUs == 0 {
		s.CPUs = 1
	}
	if s.MemoryMB == 0 {
		s.MemoryMB = 1024
	}
	if s.DiskGB == 0 {
		s.DiskGB = 8
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	nic := s.NIC
	switch nic {
	case "":
		nic = "virtio-net-pci"
	case "virtio-net-pci", "e1000":
	default:
		return nil, fmt.Errorf("lab: NIC %q: want virtio-net-pci or e1000", nic)
	}
	disk := filepath.Join(s.Dir, "disk.qcow2")
	if err := run(ctx, "qemu-img", "create", "-q", "-f", "qcow2", disk, fmt.Sprintf("%dG", s.DiskGB)); err != nil {
		return nil, err
	}
	if s.Used {
		if err := run(ctx, "qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64M", disk); err != nil {
			return nil, err
		}
	}
	if err := n.AddTap(ctx, tap); err != nil {
		return nil, err
	}
	if err := os.Remove(s.QMP()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: the last run's QMP socket: %w", s.Name, err)
	}
	acc := s.Accel
	if acc.Accel != "kvm" && !s.NestedVirt {
		// Under TCG the server gets no hardware virtualization unless it
		// is to run guests: with QEMU's emulated SVM/VMX its host OS loads
		// KVM, and the accelerator probe's guest can hang the server's
		// kernel.
		acc.CPU = cmp.Or(acc.CPU, accel.TCGCPU) + ",svm=off,vmx=off"
	}
	args := append([]string{"-name", s.Name, "-machine", "q35"}, accel.Args(acc)...)
	args = append(args,
		"-smp", fmt.Sprint(s.CPUs),
		"-m", fmt.Sprint(s.MemoryMB),
		"-display", "none", "-monitor", "none",
		"-serial", "file:"+s.SerialLog(),
		"-qmp", "unix:"+s.QMP()+",server=on,wait=off",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", nic+",netdev=n0,mac="+s.MAC+",bootindex=1"+romfile(s.NoOptionROM),
		"-drive", "file="+disk+",if=virtio,format=qcow2",
		"-device", "virtio-rng-pci",
		"-boot", "n",
	)
	if s.UUID != "" {
		args = append(args, "-uuid", s.UUID)
	}
	switch s.Firmware {
	case "", "bios":
	case "uefi":
		vars := filepath.Join(s.Dir, "OVMF_VARS.fd")
		b, err := os.ReadFile(OVMFVars)
		if err != nil {
			return nil, fmt.Errorf("UEFI firmware: %w (apt-get install ovmf)", err)
		}
		if err := os.WriteFile(vars, b, 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-drive", "if=pflash,format=raw,readonly=on,file="+OVMFCode, "-drive", "if=pflash,format=raw,file="+vars)
	default:
		return nil, fmt.Errorf("lab: firmware %q: want bios or uefi", s.Firmware)
	}
	if s.NoReboot {
		args = append(args, "-no-reboot")
	}
	if s.Off {
		args = append(args, "-S")
	}
	if s.NVMe != "" {
		args = append(args, "-drive", "file="+s.NVMe+",if=none,id=nvme0,format=raw", "-device", "nvme,serial=loom-nvme,drive=nvme0")
	}
	if s.SATA != "" {
		args = append(args, "-device", "ahci,id=ahci0", "-drive", "file="+s.SATA+",if=none,id=sata0,format=raw", "-device", "ide-hd,drive=sata0,bus=ahci0.0,serial=loom-sata")
	}
	cmd := n.Command(ctx, "qemu-system-x86_64", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if s.Detach {
		cmd = n.Command(context.Background(), "qemu-system-x86_64", args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	log, err := os.Create(s.QEMULog())
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		_ = log.Close() // the start error is the one to report
		return nil, fmt.Errorf("starting QEMU for %s: %w", s.Name, err)
	}
	return cmd, nil
}

// StartIn runs a server program in namespace ns, its output in
// dir/server.log, and waits until that log shows marker (with no marker:
// a second). It dies with the caller. Stop ends it.
func StartIn(ns, dir, marker string, args ...string) (*exec.Cmd, error) {
	logPath := filepath.Join(dir, "server.log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // the server writes through its own descriptor
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		time.Sleep(200 * time.Millisecond)
		b, _ := os.ReadFile(logPath)
		if marker == "" || strings.Contains(string(b), marker) {
			time.Sleep(time.Second)
			return cmd, nil
		}
		if time.Now().After(deadline) {
			Stop(cmd)
			return nil, fmt.Errorf("%s not ready after 60s: %s", args[0], TailString(string(b), 10))
		}
	}
}

// Stop ends a command with SIGTERM, then SIGKILL after 10 s, and waits.
func Stop(cmd *exec.Cmd) {
	// Signal and Kill fail only if it has ended already, and the exit
	// status of a stopped program says nothing: Stop only makes sure.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
