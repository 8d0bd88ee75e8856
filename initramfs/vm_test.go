package initramfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/scripts/lab"
	"github.com/loomfabric/loom/scripts/vmtest"
)

// Where `make initramfs` and `make images` put their output.
const (
	bootDir   = "../build/maintenance"
	hostImage = "../build/images/host.ext4"
)

// TestMain removes the binaries built for the tests (64 MB a run).
func TestMain(m *testing.M) { vmtest.Main(m) }

// The binaries the tests run, built once (vmtest.Binaries).
var loomdBin, labBin, loomBin string

// loomd builds Loom's binaries once for all tests and returns loomd's path.
func loomd(t *testing.T) string {
	dir := vmtest.Binaries(t)
	loomdBin, labBin, loomBin = filepath.Join(dir, "loomd"), filepath.Join(dir, "lab"), filepath.Join(dir, "loom")
	return loomdBin
}

// rig is one test's lab: a namespace, a loomd and one server.
type rig struct {
	t       *testing.T
	dir     string
	fabric  *client.Client
	srv     lab.Server
	data    string
	qemu    *exec.Cmd
	exited  chan struct{} // closed when QEMU has exited
	exitErr error
	killed  atomic.Bool // the test ended QEMU itself
	loomLog string
	console *vmtest.Console // the server's serial console
	net     *lab.Net        // loomd's network
	// serverNet is where the server boots: net unless prepare sets it
	// (a subnet behind a relay).
	serverNet *lab.Net
}

// newRig starts loomd in a fresh namespace (subnet 10.79.N.0/24), runs
// prepare (if any) against it, then boots one server.
// Options, if any, adjust the server (firmware, option ROM).
func newRig(t *testing.T, subnet int, env []string, args []string, prepare func(*rig), options ...func(*lab.Server)) *rig {
	vmtest.Require(t, vmtest.Built("build/maintenance/vmlinuz", "build/maintenance/initramfs.cpio.xz", "build/images/host.ext4"))
	ctx := context.Background()
	acc, err := lab.DecideAccel(ctx, "..", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	bin := loomd(t)
	dir := t.TempDir()
	boot, _ := filepath.Abs(bootDir)
	ln, err := lab.NewNet(ctx, lab.TestNS(), netip.MustParsePrefix(fmt.Sprintf("10.79.%d.1/24", subnet)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &rig{t: t, dir: dir, data: filepath.Join(dir, "data"), loomLog: filepath.Join(dir, "loomd.log"), net: ln, serverNet: ln}
	ld, fabric, err := ln.StartLoomd(ctx, lab.Loomd{
		Bin: bin, DataDir: r.data, Socket: filepath.Join(dir, "loomd.sock"), BootDir: boot, Log: r.loomLog, Env: env,
		Args: append([]string{"--ipv6-ra", "--heartbeat", "1s"}, args...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Process.Signal(syscall.SIGTERM) })
	r.fabric = fabric
	if prepare != nil {
		prepare(r)
	}
	r.srv = lab.Server{Name: "s", MAC: lab.NewMAC(), UUID: lab.NewUUID(), CPUs: 1, MemoryMB: 1536, DiskGB: 3, Dir: filepath.Join(dir, "s"), NoReboot: true, Accel: acc}
	for _, o := range options {
		o(&r.srv)
	}
	r.console = vmtest.NewConsole(r.srv.SerialLog(), r.died)
	t.Cleanup(func() { _ = r.console.Close() })
	r.startServer(r.serverNet)
	return r
}

func (r *rig) startServer(ln *lab.Net) {
	q, err := ln.Start(context.Background(), r.srv, "tap0")
	if err != nil {
		r.t.Fatal(err)
	}
	r.qemu, r.exited = q, make(chan struct{})
	go func() { r.exitErr = q.Wait(); close(r.exited) }()
	r.t.Cleanup(func() { r.kill() })
}

// kill ends the server's QEMU and waits for it.
func (r *rig) kill() {
	r.killed.Store(true)
	r.qemu.Process.Kill()
	<-r.exited
}

// died says, when QEMU has exited without the test asking, how: its exit
// and the tail of its own output. "" while it runs.
func (r *rig) died() string {
	select {
	case <-r.exited:
		if !r.killed.Load() {
			return fmt.Sprintf("the server's QEMU exited (%v): %s", r.exitErr, lab.Tail(r.srv.QEMULog(), 5))
		}
	default:
	}
	return ""
}

func (r *rig) dump() {
	r.t.Logf("serial console (last lines):\n%s", lab.Tail(r.srv.SerialLog(), 40))
	r.t.Logf("loomd log (last lines):\n%s", lab.Tail(r.loomLog, 30))
}

func (r *rig) serial() string { return r.console.Text() }

// expectSerial waits up to d for each marker on the serial console: the
// agent prints a marker once it has the fabric's answer, so the API may be a
// moment ahead of the console.
func (r *rig) expectSerial(d time.Duration, marks ...string) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for _, m := range marks {
		if err := r.console.ExpectBy(m, deadline); err != nil {
			r.dump()
			if r.died() != "" {
				r.t.Fatal(err)
			}
			r.t.Error(err)
		}
	}
}

// wait waits for a condition on the node, failing the test with the logs;
// a QEMU that dies meanwhile fails it at once, with QEMU's own words.
func (r *rig) wait(d time.Duration, what string, ok func(api.Node) bool) ([]api.Phase, api.Node) {
	r.t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		select {
		case <-r.exited:
			if d := r.died(); d != "" {
				cancel(errors.New(d))
			}
		case <-ctx.Done():
		}
	}()
	phases, n, err := lab.WatchPhases(ctx, r.fabric, r.srv.MAC, d, ok)
	if cause := context.Cause(ctx); err != nil && cause != nil && cause != context.Canceled {
		err = cause
	}
	if err != nil {
		r.dump()
		r.t.Fatalf("waiting for %s: %v (phases seen: %v)", what, err, phases)
	}
	return phases, n
}

// TestNetbootRegisters boots one QEMU server with -boot n against a real
// loomd in a fresh network namespace: QEMU's iPXE ROM gets DHCP and the
// script from loomd, boots the u-root maintenance OS, whose agent must
// register with the inventory QEMU was given. Then the VM is killed and
// the node must go Unreachable.
func TestNetbootRegisters(t *testing.T) {
	t.Parallel()
	start := time.Now()
	r := newRig(t, 1, nil, []string{"--grace", "6s"}, nil)
	_, n := r.wait(5*time.Minute, "Registered", func(n api.Node) bool { return n.Phase == api.PhaseRegistered })
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
	want := summary{CPUs: 1, Memory: 1536 << 20, UUID: r.srv.UUID, MACs: []string{r.srv.MAC}, Disks: map[string]uint64{"vda": 3 << 30}}
	if diff := cmp.Diff(want, got); diff != "" {
		r.dump()
		t.Errorf("inventory of %s differs from what QEMU was given (-want +got):\n%s", n.ID, diff)
	}
	if !strings.HasPrefix(n.IP, "10.79.1.") {
		t.Errorf("node IP = %q, want an address from loomd's pool 10.79.1.0/24", n.IP)
	}
	r.expectSerial(20*time.Second, "LOOM-MARK registered node="+n.ID)

	// Kill the server: it must go Unreachable after the grace period.
	r.kill()
	r.wait(30*time.Second, "Unreachable", func(n api.Node) bool { return n.Phase == api.PhaseUnreachable })
}

// TestUEFIFirmwarePXE boots a UEFI server (OVMF) whose NIC has no iPXE
// option ROM, as a real server's: the firmware's own PXE stack gets its
// DHCP answer from loomd, fetches ipxe.efi over loomd's TFTP, and iPXE
// takes it from there over HTTP to the maintenance OS, which registers.
func TestUEFIFirmwarePXE(t *testing.T) {
	t.Parallel()
	requireUEFI(t)
	start := time.Now()
	r := newRig(t, 6, nil, []string{"--grace", "60s", "--default-profile", "host"}, withHostProfile, func(s *lab.Server) { s.Firmware, s.NoOptionROM = "uefi", true })
	_, n := r.wait(8*time.Minute, "Registered", registeredOrLater)
	t.Logf("UEFI server %s Registered %.1fs after QEMU started", n.ID, time.Since(start).Seconds())
	if log, _ := os.ReadFile(r.loomLog); !strings.Contains(string(log), "tftp: sent") || !strings.Contains(string(log), "file=ipxe.efi") {
		r.dump()
		t.Errorf("loomd did not send ipxe.efi over TFTP: the firmware did not boot through TFTP")
	}
	r.expectSerial(20*time.Second, "LOOM-MARK registered node="+n.ID)
	r.toReady(start)
}

// TestUEFIHTTPBoot boots a UEFI server whose NIC has no iPXE ROM with TFTP
// off: its PXE attempts get no boot file, and its firmware's HTTP boot
// fetches ipxe.efi from the URL loomd hands to HTTPClient.
func TestUEFIHTTPBoot(t *testing.T) {
	t.Parallel()
	requireUEFI(t)
	start := time.Now()
	r := newRig(t, 8, nil, []string{"--grace", "60s", "--tftp", "off", "--default-profile", "host"}, withHostProfile, func(s *lab.Server) { s.Firmware, s.NoOptionROM = "uefi", true })
	_, n := r.wait(10*time.Minute, "Registered", registeredOrLater)
	t.Logf("UEFI HTTP boot server %s Registered %.1fs after QEMU started", n.ID, time.Since(start).Seconds())
	log, _ := os.ReadFile(r.loomLog)
	if !strings.Contains(string(log), "netboot: serving the first stage over HTTP") || strings.Contains(string(log), "tftp: sent") {
		r.dump()
		t.Errorf("the first stage did not come over HTTP (and only over HTTP)")
	}
	if !strings.Contains(r.serial(), "HTTP Boot") {
		t.Errorf("the firmware's console does not show an HTTP boot")
	}
	r.expectSerial(20*time.Second, "LOOM-MARK registered node="+n.ID)
	r.toReady(start)
}

// TestProxyDHCP: dnsmasq owns the addresses, loomd in proxy mode only
// tells the UEFI firmware (no iPXE ROM) and then iPXE what to boot.
func TestProxyDHCP(t *testing.T) {
	t.Parallel()
	requireUEFI(t)
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		vmtest.Require(t, fmt.Errorf("dnsmasq (apt-get install dnsmasq-base): %v", err))
	}
	start := time.Now()
	leases := ""
	r := newRig(t, 9, nil, []string{"--grace", "60s", "--dhcp-mode", "proxy", "--default-profile", "host"}, func(r *rig) {
		withHostProfile(r)
		leases = filepath.Join(r.dir, "dnsmasq.leases")
		cmd := r.net.Command(context.Background(), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
			"--interface="+r.net.Bridge, "--bind-interfaces", "--dhcp-range=10.79.9.20,10.79.9.40,1h",
			"--dhcp-leasefile="+leases, "--pid-file=", "--log-dhcp")
		r.helper(cmd, "dnsmasq")
	}, func(s *lab.Server) { s.Firmware, s.NoOptionROM = "uefi", true })
	_, n := r.wait(10*time.Minute, "Registered", registeredOrLater)
	t.Logf("server %s Registered through proxyDHCP %.1fs after QEMU started", n.ID, time.Since(start).Seconds())
	if a, err := netip.ParseAddr(n.IP); err != nil || a.Less(netip.MustParseAddr("10.79.9.20")) || netip.MustParseAddr("10.79.9.40").Less(a) {
		t.Errorf("node IP %q is not from dnsmasq's range 10.79.9.20-40", n.IP)
	}
	if b, _ := os.ReadFile(leases); !strings.Contains(string(b), r.srv.MAC) {
		t.Errorf("dnsmasq has no lease for %s: %q", r.srv.MAC, b)
	}
	if log, _ := os.ReadFile(r.loomLog); !strings.Contains(string(log), "tftp: sent") {
		r.dump()
		t.Errorf("the firmware did not fetch the first stage over TFTP")
	}
	r.expectSerial(20*time.Second, "LOOM-MARK registered node="+n.ID)
	r.toReady(start)
}

// TestRelayedSubnet boots a server on a second subnet behind a router
// namespace running isc-dhcp-relay: it gets that subnet's address and
// router, and loomd's lease records the relay and its option 82.
func TestRelayedSubnet(t *testing.T) {
	t.Parallel()
	relay, err := exec.LookPath("dhcrelay")
	if err != nil {
		vmtest.Require(t, fmt.Errorf("dhcrelay (apt-get install isc-dhcp-relay): %v", err))
	}
	start := time.Now()
	r := newRig(t, 10, nil, []string{"--grace", "60s", "--default-profile", "host", "--subnet", "10.80.10.0/24,pool=10.80.10.100-10.80.10.150,router=10.80.10.1"}, func(r *rig) {
		withHostProfile(r)
		ctx := context.Background()
		rn, err := r.net.NewRoutedNet(ctx, lab.TestNS(), netip.MustParsePrefix("10.80.10.1/24"), netip.MustParsePrefix("10.79.10.2/24"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rn.Close() })
		r.serverNet = rn
		r.helper(rn.Command(ctx, relay, "-4", "-d", "-a", "-pf", filepath.Join(r.dir, "dhcrelay.pid"), "-id", rn.Bridge, "-iu", "up0", "10.79.10.1"), "dhcrelay")
	})
	_, n := r.wait(10*time.Minute, "Registered", registeredOrLater)
	t.Logf("server %s on the relayed subnet Registered %.1fs after QEMU started", n.ID, time.Since(start).Seconds())
	if !strings.HasPrefix(n.IP, "10.80.10.") {
		t.Errorf("node IP %q, want one from the relayed subnet's pool 10.80.10.100-150", n.IP)
	}
	leases, err := r.fabric.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got *api.Lease
	for i := range leases {
		if leases[i].MAC == r.srv.MAC {
			got = &leases[i]
		}
	}
	if got == nil || got.Relay == nil || got.Relay.GIAddr != "10.80.10.1" || got.Relay.CircuitID == "" {
		r.dump()
		t.Errorf("lease of %s = %+v, want one through relay 10.80.10.1 with its circuit id (option 82)", r.srv.MAC, got)
	} else {
		t.Logf("lease %s via %s circuit %q remote %q", got.IP, got.Relay.GIAddr, got.Relay.CircuitID, got.Relay.RemoteID)
	}
	r.expectSerial(20*time.Second, "LOOM-MARK registered node="+n.ID)
	r.toReady(start)
}

// TestBMCPowerCycle powers a lab server through its virtual Redfish BMC,
// by loomd: wrong credentials are refused with the node untouched; off
// stops it; a power cycle brings it back into the maintenance OS, where it
// registers again.
func TestBMCPowerCycle(t *testing.T) {
	t.Parallel()
	r := newRig(t, 11, nil, []string{"--grace", "60s"}, nil, func(s *lab.Server) { s.NoReboot = false })
	_, n := r.wait(5*time.Minute, "Registered", func(n api.Node) bool { return n.Phase == api.PhaseRegistered })
	ctx := context.Background()

	pwFile := filepath.Join(r.dir, "bmc.password")
	os.WriteFile(pwFile, []byte("lab-s3cret\n"), 0o600)
	r.helper(r.net.Command(ctx, labBin, "vbmc", "-qmp", r.srv.QMP(), "-listen", "10.79.11.1:8623", "-user", "admin", "-password-file", pwFile), "vbmc")
	time.Sleep(500 * time.Millisecond)

	for _, c := range []api.Credential{{Name: "lab", Username: "admin", Password: "lab-s3cret"}, {Name: "wrong", Username: "admin", Password: "nope"}} {
		if _, err := r.fabric.PutCredential(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if cs, err := r.fabric.Credentials(ctx); err != nil || len(cs) != 2 || cs[0].Password != "" || cs[1].Password != "" {
		t.Errorf("credentials listed as %+v (%v): want two, without passwords", cs, err)
	}
	bmcAt := api.BMC{Protocol: api.BMCRedfish, Address: "http://10.79.11.1:8623", Credential: "wrong"}
	if _, err := r.fabric.SetBMC(ctx, n.ID, bmcAt); err != nil {
		t.Fatal(err)
	}
	before, _ := r.fabric.Node(ctx, n.ID)
	if _, err := r.fabric.Power(ctx, n.ID, "cycle"); err == nil || !strings.Contains(err.Error(), "refused the credentials") {
		t.Errorf("power cycle with a wrong password: err = %v, want the BMC's refusal", err)
	}
	after, _ := r.fabric.Node(ctx, n.ID)
	if after.Phase != before.Phase || after.BMC.LastAction != "" || after.BMC.Power != "" {
		t.Errorf("a refused power cycle changed the node: %+v → %+v", before, after)
	}

	bmcAt.Credential = "lab"
	if _, err := r.fabric.SetBMC(ctx, n.ID, bmcAt); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ op, want string }{{"status", "On"}, {"off", "Off"}, {"status", "Off"}} {
		got, err := r.fabric.Power(ctx, n.ID, step.op)
		if err != nil || got != step.want {
			t.Fatalf("power %s = %q, %v; want %q", step.op, got, err, step.want)
		}
	}
	size := len(r.serial())
	time.Sleep(3 * time.Second)
	if grown := len(r.serial()) - size; grown != 0 {
		t.Errorf("the console grew by %d bytes while the server was off", grown)
	}
	boots := strings.Count(r.serial(), "LOOM-MARK registered")
	cycled := time.Now()
	if got, err := r.fabric.Power(ctx, n.ID, "cycle"); err != nil || got != "On" {
		t.Fatalf("power cycle = %q, %v; want On", got, err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for strings.Count(r.serial(), "LOOM-MARK registered") <= boots {
		if time.Now().After(deadline) {
			r.dump()
			t.Fatalf("the server did not register again within 5 min of its power cycle")
		}
		if d := r.died(); d != "" {
			t.Fatalf("QEMU died: %s", d)
		}
		time.Sleep(time.Second)
	}
	t.Logf("power cycle → maintenance OS registered again in %.1fs", time.Since(cycled).Seconds())
	got, err := r.fabric.Node(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.BMC == nil || got.BMC.Power != "On" || !strings.HasPrefix(got.BMC.LastAction, "cycle at ") {
		t.Errorf("node BMC after the cycle = %+v, want power On and the cycle recorded", got.BMC)
	}
	if b, _ := json.Marshal(got); strings.Contains(string(b), "lab-s3cret") {
		t.Errorf("the node's JSON carries the BMC password")
	}
}

// registeredOrLater: the maintenance agent has registered (a node with a
// profile goes on to Imaging at once).
func registeredOrLater(n api.Node) bool {
	return n.Inventory != nil && n.Phase != api.PhaseDiscovered && n.Phase != api.PhaseUnreachable
}

// withHostProfile uploads the host image as profile "host" (a prepare
// step for rigs started with --default-profile host).
func withHostProfile(r *rig) {
	if err := lab.SetUpHostProfile(context.Background(), r.fabric, "host", hostImage); err != nil {
		r.t.Fatal(err)
	}
}

// toReady follows the server on from Registered: imaged, its host OS
// booted, its host agent registered.
func (r *rig) toReady(start time.Time) {
	r.t.Helper()
	_, n := r.wait(8*time.Minute, "Ready", func(n api.Node) bool { return n.Phase == api.PhaseReady || n.Phase == api.PhaseFailed })
	if n.Phase != api.PhaseReady {
		r.dump()
		r.t.Fatalf("node %s ended %s: %s", n.ID, n.Phase, n.Reason)
	}
	r.t.Logf("node %s Ready %.1fs after QEMU started", n.ID, time.Since(start).Seconds())
	r.expectSerial(30*time.Second, "LOOM-MARK host-ready node="+n.ID)
}

// helper runs a program of the test's (dnsmasq, a relay, a BMC) until the
// test ends, its output in DIR/name.log.
func (r *rig) helper(cmd *exec.Cmd, name string) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := os.Create(filepath.Join(r.dir, name+".log"))
	if err != nil {
		r.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting %s: %v", name, err)
	}
	r.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); out.Close() })
}

func requireUEFI(t *testing.T) {
	var missing error
	if _, err := os.Stat(lab.OVMFCode); err != nil {
		missing = fmt.Errorf("UEFI firmware (apt-get install ovmf): %v", err)
	}
	if _, err := os.Stat("/usr/lib/ipxe/ipxe.efi"); err != nil {
		missing = errors.Join(missing, fmt.Errorf("first-stage iPXE (apt-get install ipxe): %v", err))
	}
	vmtest.Require(t, missing)
}

// provisionRig starts loomd with the host image as the default profile
// (uploaded, and corrupted if asked, before the server boots).
func provisionRig(t *testing.T, subnet int, env []string, corrupt bool, options ...func(*lab.Server)) *rig {
	return newRig(t, subnet, env, []string{"--grace", "60s", "--default-profile", "host"}, func(r *rig) {
		ctx := context.Background()
		if err := lab.SetUpHostProfile(ctx, r.fabric, "host", hostImage); err != nil {
			t.Fatal(err)
		}
		if !corrupt {
			return
		}
		m, err := r.fabric.Image(ctx, "host")
		if err != nil {
			t.Fatal(err)
		}
		rg := m.Ranges[len(m.Ranges)/2]
		at := int64(rg.Offset + rg.Length/2)
		f, err := os.OpenFile(filepath.Join(r.data, "images", m.Digest), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := []byte{0}
		f.ReadAt(b, at)
		b[0] ^= 0x01
		f.WriteAt(b, at)
		t.Logf("flipped one bit of the stored image at byte %d (range %d+%d)", at, rg.Offset, rg.Length)
	}, options...)
}

// checkDisk stops the server and compares its host partition with the image.
func (r *rig) checkDisk() {
	r.t.Helper()
	r.kill()
	raw := filepath.Join(r.dir, "disk.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", filepath.Join(r.srv.Dir, "disk.qcow2"), raw).CombinedOutput(); err != nil {
		r.t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	st, err := os.Stat(hostImage)
	if err != nil {
		r.t.Fatal(err)
	}
	out, err := exec.Command("cmp", "-i", "1048576:0", "-n", fmt.Sprint(st.Size()), raw, hostImage).CombinedOutput()
	if err != nil {
		r.t.Errorf("host partition (at 1 MiB on the disk) differs from %s: %v %s", hostImage, err, out)
	}
	if out, err := exec.Command("sfdisk", "--dump", raw).CombinedOutput(); err != nil || !strings.Contains(string(out), `name="loom-host"`) || !strings.Contains(string(out), `name="loom-data"`) {
		r.t.Errorf("partition table: %v\n%s", err, out)
	}
}

// TestProvisionToReady: Registered → Imaging → Imaged → Booting → Ready,
// with the host agent really running from the new partition, as the same node.
func TestProvisionToReady(t *testing.T) {
	t.Parallel()
	start := time.Now()
	r := provisionRig(t, 2, nil, false)
	phases, n := r.wait(8*time.Minute, "Ready", func(n api.Node) bool { return n.Phase == api.PhaseReady || n.Phase == api.PhaseFailed })
	if n.Phase != api.PhaseReady {
		r.dump()
		t.Fatalf("node %s ended %s: %s", n.ID, n.Phase, n.Reason)
	}
	t.Logf("node %s Ready %.1fs after QEMU started; phases %v", n.ID, time.Since(start).Seconds(), phases)
	var history []api.Phase
	for _, h := range n.History {
		history = append(history, h.To)
	}
	want := []api.Phase{api.PhaseRegistered, api.PhaseImaging, api.PhaseImaged, api.PhaseBooting, api.PhaseReady}
	if !isSubsequence(want, history) {
		t.Errorf("node history %v, want it to pass through %v in order", history, want)
	}
	r.expectSerial(30*time.Second, "LOOM-MARK imaged device=/dev/vda1", "LOOM-MARK kexec device=/dev/vda1", "LOOM-MARK registered node="+n.ID+" mode=host", "LOOM-MARK host-ready node="+n.ID)
	if n.Mode != api.ModeHost || n.Imaged != n.Provision {
		t.Errorf("node %s: mode %s, imaged %d of %d; want host, imaged", n.ID, n.Mode, n.Imaged, n.Provision)
	}
	r.checkDisk()
}

// TestProvisionResumesCutStream: loomd cuts the image transfer halfway; the
// agent resumes from where it was and the node still reaches Ready with a
// correct image.
func TestProvisionResumesCutStream(t *testing.T) {
	t.Parallel()
	r := provisionRig(t, 3, []string{"LOOM_FAULT_CUT_BLOBS=1"}, false)
	_, n := r.wait(8*time.Minute, "Ready", func(n api.Node) bool { return n.Phase == api.PhaseReady || n.Phase == api.PhaseFailed })
	if n.Phase != api.PhaseReady {
		r.dump()
		t.Fatalf("node %s ended %s: %s", n.ID, n.Phase, n.Reason)
	}
	if log, _ := os.ReadFile(r.loomLog); !strings.Contains(string(log), "fault injection: cutting an image transfer") {
		t.Errorf("loomd never cut a transfer: the test did not test resumption")
	}
	if !strings.Contains(r.serial(), "transfer broken, resuming") {
		r.dump()
		t.Errorf("the agent did not log a resumed transfer")
	}
	r.checkDisk()
}

// TestProvisionCorruptImage: one flipped bit in the stored image → the
// node ends Failed with a sha256 mismatch and never boots the host.
func TestProvisionCorruptImage(t *testing.T) {
	t.Parallel()
	r := provisionRig(t, 4, nil, true)
	_, n := r.wait(8*time.Minute, "Failed", func(n api.Node) bool { return n.Phase == api.PhaseFailed || n.Phase == api.PhaseReady })
	if n.Phase != api.PhaseFailed || !strings.Contains(n.Reason, "sha256 mismatch") {
		r.dump()
		t.Fatalf("node %s: phase %s reason %q; want Failed with a sha256 mismatch", n.ID, n.Phase, n.Reason)
	}
	t.Logf("reason: %s", n.Reason)
	time.Sleep(5 * time.Second)
	n, err := r.fabric.Node(context.Background(), n.ID)
	if err != nil {
		t.Fatal(err)
	}
	serial := r.serial()
	if n.Phase != api.PhaseFailed || strings.Contains(serial, "LOOM-MARK kexec") || strings.Contains(serial, "mode=host") {
		r.dump()
		t.Errorf("after the failure: phase %s, kexec attempted %v; want Failed and no handover", n.Phase, strings.Contains(serial, "LOOM-MARK kexec"))
	}
}

// isSubsequence reports whether want appears in got in order.
func isSubsequence(want, got []api.Phase) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestNestedGuestOnImagedNode: a lab server is imaged, boots its host OS,
// and its host agent runs one guest VM placed through the fabric's API (on
// its data partition), which reports Running with lo as its only
// interface. TCG inside TCG: about a minute here; LOOM_NESTED=0 skips it.
func TestNestedGuestOnImagedNode(t *testing.T) {
	if os.Getenv("LOOM_NESTED") == "0" {
		t.Skip("LOOM_NESTED=0")
	}
	r := provisionRig(t, 5, nil, false, func(s *lab.Server) { s.NestedVirt = true })
	_, n := r.wait(8*time.Minute, "Ready", func(n api.Node) bool { return n.Phase == api.PhaseReady || n.Phase == api.PhaseFailed })
	if n.Phase != api.PhaseReady {
		r.dump()
		t.Fatalf("node %s ended %s: %s", n.ID, n.Phase, n.Reason)
	}
	ctx := context.Background()
	f, err := os.Open("../build/roles/web.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := r.fabric.AddImage(ctx, "web", f, nil); err != nil {
		t.Fatal(err)
	}
	vm, err := r.fabric.CreateVM(ctx, api.VMRequest{VCPUs: 1, MemoryMB: 256, Package: "web"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		v, err := r.fabric.VM(ctx, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		if v.State == api.VMStateRunning {
			if strings.Join(v.Interfaces, ",") != "lo" {
				t.Errorf("the nested guest sees %v, want only lo", v.Interfaces)
			}
			t.Logf("nested guest %s Running on %s %.0fs after create (endpoint %s)", v.ID, v.Node, time.Since(start).Seconds(), v.Endpoint)
			if !strings.Contains(r.serial(), "LOOM-MARK data dir=/var/lib/loom") {
				r.dump()
				t.Error("the host agent did not put its guests on the data partition")
			}
			return
		}
		if time.Since(start) > 25*time.Minute {
			r.dump()
			t.Fatalf("nested guest not Running after 25 min: %+v", v.VMStatus)
		}
		time.Sleep(5 * time.Second)
	}
}

// TestRackImportPowerOn images a rack of three powered-off servers with no
// manual step: the operator's CSV (MACs, lab BMCs: two Redfish, one IPMI
// through OpenIPMI's ipmi_sim; slots, profile) goes in
// with `loom rack import`, a bad one first (refused, nothing imported);
// `loom rack power-on` boots them through their BMCs (PXE once, on), and
// `loom rack watch` follows them to Ready.
func TestRackImportPowerOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	off := func(s *lab.Server) { s.Off, s.NoReboot = true, false } // a reset is a reset, not an exit
	r := newRig(t, 12, nil, []string{"--grace", "60s"}, func(r *rig) {
		if err := lab.SetUpHostProfile(ctx, r.fabric, "host", hostImage); err != nil {
			t.Fatal(err)
		}
		if _, err := r.fabric.PutCredential(ctx, api.Credential{Name: "lab", Username: "admin", Password: "rack-s3cret"}); err != nil {
			t.Fatal(err)
		}
	}, off)
	servers := []lab.Server{r.srv}
	for i := 1; i < 3; i++ {
		s := r.srv
		s.Name, s.MAC, s.UUID, s.Dir = fmt.Sprintf("s%d", i), lab.NewMAC(), lab.NewUUID(), filepath.Join(r.dir, fmt.Sprintf("s%d", i))
		q, err := r.net.Start(ctx, s, fmt.Sprintf("tap%d", i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Process.Kill(); q.Wait() })
		servers = append(servers, s)
	}
	pwFile := filepath.Join(r.dir, "bmc.password")
	os.WriteFile(pwFile, []byte("rack-s3cret\n"), 0o600)
	// Two Redfish BMCs and one IPMI BMC (OpenIPMI's ipmi_sim, its chassis
	// driven over the server's QMP socket).
	csv := "mac,rack,slot,profile,bmc_address,bmc_protocol,credential\n"
	for i, s := range servers {
		if i == 2 {
			addr := "10.79.12.1:9623"
			cmd, err := r.net.IPMIBMC(ctx, filepath.Join(r.dir, "ipmi-"+s.Name), addr, "admin", "rack-s3cret", labBin, s.QMP())
			if err != nil {
				t.Fatal(err)
			}
			r.helper(cmd, "ipmi-"+s.Name)
			csv += fmt.Sprintf("%s,r1,u%d,host,%s,ipmi,lab\n", s.MAC, i+1, addr)
			continue
		}
		addr := fmt.Sprintf("10.79.12.1:%d", 8623+i)
		r.helper(r.net.Command(ctx, labBin, "vbmc", "-qmp", s.QMP(), "-listen", addr, "-user", "admin", "-password-file", pwFile), "vbmc-"+s.Name)
		csv += fmt.Sprintf("%s,r1,u%d,host,http://%s,redfish,lab\n", s.MAC, i+1, addr)
	}
	time.Sleep(500 * time.Millisecond)

	loom := func(args ...string) (string, error) {
		cmd := exec.Command(loomBin, args...)
		cmd.Env = append(os.Environ(), "LOOM_ADDR="+r.fabric.BaseURL, "LOOM_TOKEN="+r.fabric.Token)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	bad := filepath.Join(r.dir, "bad.csv")
	os.WriteFile(bad, []byte(strings.Replace(csv, ",lab\n", ",nosuch\n", 1)+"52:54:00:zz:00:01,r1,u9,host,,,\n"), 0o644)
	if out, err := loom("rack", "import", bad); err == nil || !strings.Contains(out, "line 5, field mac") {
		t.Fatalf("importing a CSV with a bad MAC: %v\n%s", err, out)
	}
	os.WriteFile(bad, []byte(strings.Replace(csv, ",lab\n", ",nosuch\n", 1)), 0o644)
	if out, err := loom("rack", "import", bad); err == nil || !strings.Contains(out, `line 2, field credential: "nosuch" does not exist`) {
		t.Fatalf("importing a CSV with an unknown credential: %v\n%s", err, out)
	}
	if nodes, _ := r.fabric.Nodes(ctx); len(nodes) != 0 {
		t.Fatalf("refused imports left %d nodes", len(nodes))
	}

	good := filepath.Join(r.dir, "rack.csv")
	os.WriteFile(good, []byte(csv), 0o644)
	if out, err := loom("rack", "import", good); err != nil || !strings.Contains(out, "3 new") {
		t.Fatalf("rack import: %v\n%s", err, out)
	}
	time.Sleep(2 * time.Second)
	for _, s := range servers {
		if b, _ := os.ReadFile(s.SerialLog()); len(b) != 0 {
			t.Fatalf("%s printed %d bytes before it was powered on", s.Name, len(b))
		}
	}
	start := time.Now()
	if out, err := loom("rack", "power-on", "r1"); err != nil {
		t.Fatalf("rack power-on: %v\n%s", err, out)
	}
	out, err := loom("rack", "watch", "r1", "--timeout", "9m")
	t.Logf("loom rack watch r1:\n%s", out)
	if err != nil || !strings.Contains(out, "rack r1: 3 of 3 Ready, 0 Failed") {
		for _, s := range servers {
			t.Logf("%s console:\n%s", s.Name, lab.Tail(s.SerialLog(), 15))
		}
		r.dump()
		t.Fatalf("rack watch: %v", err)
	}
	t.Logf("rack of 3: power-on → all Ready in %.0fs", time.Since(start).Seconds())
	nodes, err := r.fabric.RackNodes(ctx, "r1")
	if err != nil || len(nodes) != 3 {
		t.Fatalf("rack nodes: %v %v", nodes, err)
	}
	for _, n := range nodes {
		var history []api.Phase
		for _, h := range n.History {
			history = append(history, h.To)
		}
		want := []api.Phase{api.PhaseEnrolled, api.PhaseDiscovered, api.PhaseRegistered, api.PhaseImaging, api.PhaseImaged, api.PhaseBooting, api.PhaseReady}
		if !isSubsequence(want, history) || n.BMC == nil || n.BMC.Power != "On" || !strings.Contains(n.BMC.LastAction, "rack r1 power on") {
			t.Errorf("node %s (slot %s): history %v, BMC %+v; want %v and powered on by the rack", n.ID, n.Slot, history, n.BMC, want)
		}
	}
}

// TestDecommissionNVMe: `loom node decommission` on a registered server
// with a virtio disk and an NVMe drive holding data: its maintenance agent
// formats the NVMe namespace with user data erase and zeroes the virtio
// disk, the node records both and ends Decommissioned, and loomd powers
// it off through its BMC.
func TestDecommissionNVMe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var nvme, sata string
	r := newRig(t, 13, nil, []string{"--grace", "60s"}, func(r *rig) {
		nvme, sata = filepath.Join(r.dir, "nvme.raw"), filepath.Join(r.dir, "sata.raw")
		for _, d := range []string{nvme, sata} {
			if err := os.WriteFile(d, bytes.Repeat([]byte{0xab}, 64<<20), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.fabric.PutCredential(ctx, api.Credential{Name: "lab", Username: "admin", Password: "dc-s3cret"}); err != nil {
			t.Fatal(err)
		}
	}, func(s *lab.Server) { s.NVMe, s.SATA, s.Used, s.NoReboot = nvme, sata, true, false })
	_, n := r.wait(5*time.Minute, "Registered", func(n api.Node) bool { return n.Phase == api.PhaseRegistered })
	var disks []string
	for _, d := range n.Inventory.Disks {
		disks = append(disks, d.Name)
	}
	if !slices.Contains(disks, "nvme0n1") || !slices.Contains(disks, "sda") {
		r.dump()
		t.Fatalf("inventory disks %v lack the NVMe or the SATA drive", disks)
	}
	pwFile := filepath.Join(r.dir, "bmc.password")
	os.WriteFile(pwFile, []byte("dc-s3cret\n"), 0o600)
	r.helper(r.net.Command(ctx, labBin, "vbmc", "-qmp", r.srv.QMP(), "-listen", "10.79.13.1:8623", "-user", "admin", "-password-file", pwFile), "vbmc")
	time.Sleep(500 * time.Millisecond)
	if _, err := r.fabric.SetBMC(ctx, n.ID, api.BMC{Protocol: api.BMCRedfish, Address: "http://10.79.13.1:8623", Credential: "lab"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := r.fabric.Decommission(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	phases, n := r.wait(10*time.Minute, "Decommissioned", func(n api.Node) bool {
		return n.Phase == api.PhaseDecommissioned || n.Phase == api.PhaseFailed
	})
	if n.Phase != api.PhaseDecommissioned {
		r.dump()
		t.Fatalf("node ended %s: %s (phases %v)", n.Phase, n.Reason, phases)
	}
	t.Logf("decommissioned in %.0fs: %s", time.Since(start).Seconds(), n.Wiped)
	// QEMU's SATA disk answers IDENTIFY DEVICE (through libata's ATA
	// pass-through) without the security feature set: zeroed instead, and
	// the record says why.
	if !strings.Contains(n.Wiped, "nvme0n1: NVMe format with user data erase") || !strings.Contains(n.Wiped, "vda: zeroed 3.0 GiB") ||
		!strings.Contains(n.Wiped, "sda: zeroed 64.0 MiB") || !strings.Contains(n.Wiped, "does not offer ATA security erase") {
		t.Errorf("wiped = %q, want the NVMe formatted, vda zeroed, sda zeroed as it offers no ATA security erase", n.Wiped)
	}
	r.expectSerial(30*time.Second, "LOOM-MARK wiping", "LOOM-MARK decommissioned")
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := r.fabric.Node(ctx, n.ID)
		if got.BMC != nil && got.BMC.Power == "Off" && strings.Contains(got.BMC.LastAction, "decommissioned") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not powered off after the wipe: BMC %+v", got.BMC)
		}
		time.Sleep(500 * time.Millisecond)
	}
	b, err := os.ReadFile(nvme)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Errorf("the NVMe drive still holds data at byte %d after its secure erase", i)
	}
	if b, err = os.ReadFile(sata); err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
		t.Errorf("the SATA drive still holds data at byte %d after its wipe", i)
	}
	r.kill()
	raw := filepath.Join(r.dir, "vda.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", filepath.Join(r.srv.Dir, "disk.qcow2"), raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	if out, err := exec.Command("cmp", "-n", fmt.Sprint(3<<30), raw, "/dev/zero").CombinedOutput(); err != nil {
		t.Errorf("vda is not all zeroes after decommissioning: %v %s", err, out)
	}
}
