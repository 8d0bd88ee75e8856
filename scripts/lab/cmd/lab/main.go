// Command lab runs Loom's lab: loomd in a network namespace of its own,
// serving DHCP and netboot on a bridge, and N QEMU servers, each with a
// virtual Redfish BMC, enrolled as rack "lab" and powered on through their
// BMCs: they PXE-boot, register, are imaged and come up Ready.
//
//	lab up [-n 3]   start (replacing a lab that is already up)
//	lab down        stop the lab's processes and remove its namespace
//	lab accel       decide (or read from the cache) how QEMU runs here, and say why
//
// State (PIDs, namespace) is kept in build/lab/state.json from the first
// step on, so `lab down` cleans up after a crash too.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/scripts/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

// state is what `lab down` needs.
type state struct {
	NS    string `json:"ns"`
	Procs []proc `json:"procs"`
}

type proc struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Exe is the program, checked before a signal so a reused PID is spared.
	Exe string `json:"exe"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 3, "number of servers")
	dir := fs.String("dir", "build/lab", "lab directory (logs, disks, state)")
	cpus := fs.Int("cpus", 1, "vCPUs per server")
	mem := fs.Int("memory", 1536, "MiB of memory per server")
	disk := fs.Int("disk", 16, "GiB of (sparse) disk per server")
	wait := fs.Duration("wait", 8*time.Minute, "how long `up` waits for every server to be Ready")
	qmpSock := fs.String("qmp", "", "vbmc: the server's QMP socket")
	listen := fs.String("listen", "", "vbmc: address to serve Redfish on")
	fwdNS := fs.String("ns", "", "forward: the namespace to reach into")
	fwdTo := fs.String("to", "", "forward: host:port in that namespace")
	ui := fs.String("ui", "127.0.0.1:8443", "up: where the host reaches loomd's API and dashboard (forwarded into the lab's namespace; \"\": nowhere)")
	bmcUser := fs.String("user", "admin", "vbmc: user name")
	bmcPassFile := fs.String("password-file", "", "vbmc: file holding the password")
	kinds := fs.String("kinds", "bios", "server kinds, given to servers in turn: "+strings.Join(lab.Kinds, ", ")+" (e.g. bios,uefi)")
	svcFile := fs.String("service", "images/services/guestbook/guestbook.yaml", "service manifest deployed once the servers are Ready (\"\": none); its packages come from build/roles")
	svcWait := fs.Duration("service-wait", 12*time.Minute, "how long `up` waits for every instance of the service to be Ready (after it, one Ready in each role will do)")
	guestVCPUs := fs.Int("guest-vcpus", 3, "vCPUs each server offers its guests (loom.vcpus=; more than -cpus overcommits)")
	acc := fs.String("accel", os.Getenv(lab.AccelEnv), "how servers run: auto (probe KVM, fall back to TCG), kvm or tcg (default $LOOM_ACCEL, else auto)")
	verb := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		verb, args = args[0], args[1:] // lab up -n 3: flags after the verb
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if verb == "" {
		verb = fs.Arg(0)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	switch verb {
	case "up":
		ks := strings.Split(*kinds, ",")
		for _, k := range ks {
			if err := new(lab.Server).Kind(strings.TrimSpace(k)); err != nil {
				return fmt.Errorf("--kinds: %w", err)
			}
		}
		return up(ctx, abs, *acc, ks, *n, *cpus, *mem, *disk, *wait, *svcFile, *svcWait, *guestVCPUs, *ui, stdout)
	case "down":
		return down(abs, stdout)
	case "accel":
		v, err := lab.DecideAccel(ctx, ".", *acc, nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "== QEMU runs under %s\n", v)
		return nil
	case "vbmc":
		return vbmc(ctx, *qmpSock, *listen, *bmcUser, *bmcPassFile)
	case "forward":
		return lab.Forward(ctx, *listen, *fwdNS, *fwdTo)
	case "chassis": // ipmi_sim's chassis_control program: lab chassis -qmp SOCK get|set ...
		rest := fs.Args()
		if len(rest) > 0 && rest[0] == "chassis" {
			rest = rest[1:] // the verb came after the flags
		}
		return lab.Chassis(*qmpSock, rest, stdout)
	}
	return errors.New("usage: lab [flags] up|down|accel|vbmc|forward|chassis")
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func save(dir string, st *state) error {
	b, _ := json.MarshalIndent(st, "", "  ")
	return os.WriteFile(statePath(dir), b, 0o644)
}

func up(ctx context.Context, dir, accelMode string, kinds []string, n, cpus, mem, disk int, wait time.Duration, svcFile string, svcWait time.Duration, guestVCPUs int, uiAddr string, out io.Writer) error {
	if err := lab.Prereqs(); err != nil {
		return err
	}
	accel, err := lab.DecideAccel(ctx, ".", accelMode, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "== servers run under %s\n", accel)
	for _, f := range []string{"build/bin/loomd", "build/maintenance/vmlinuz", "build/maintenance/initramfs.cpio.xz", "build/images/host.ext4"} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%v (run 'make build initramfs images')", err)
		}
	}
	if _, err := os.Stat(statePath(dir)); err == nil {
		fmt.Fprintln(out, "== a lab is up already; taking it down first")
		if err := down(dir, out); err != nil {
			return err
		}
	}
	// A new lab starts from nothing: the store of the last one knows its
	// servers as imaged, while their disks are made afresh below.
	olds, _ := filepath.Glob(filepath.Join(dir, "server*"))
	for _, old := range append(olds, filepath.Join(dir, "data")) {
		if err := os.RemoveAll(old); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	st := &state{NS: "loom-lab-" + lab.Suffix()}
	if err := save(dir, st); err != nil {
		return err
	}
	ln, err := lab.NewNet(ctx, st.NS, netip.MustParsePrefix("10.77.0.1/24"))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "== namespace %s, bridge %s %s\n", ln.NS, ln.Bridge, ln.Addr)

	bin, _ := filepath.Abs("build/bin/loomd")
	boot, _ := filepath.Abs("build/maintenance")
	ldLog := filepath.Join(dir, "loomd.log")
	// Each server's serial log, by MAC, for loom node console and the
	// dashboard's node page.
	consoles := filepath.Join(dir, "consoles")
	if err := os.MkdirAll(consoles, 0o755); err != nil {
		return err
	}
	ld, fabric, err := ln.StartLoomd(ctx, lab.Loomd{
		Bin: bin, DataDir: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "loomd.sock"),
		BootDir: boot, Log: ldLog, Args: []string{"--console-dir", consoles, "--ipv6-ra", "--default-profile", "host", "--heartbeat", "2s", "--grace", "30s", "--endpoint-ip", ln.Addr.Addr().String()}, Detach: true,
	})
	if err != nil {
		return err
	}
	if err := lab.SetUpHostProfile(ctx, fabric, "host", "build/images/host.ext4", fmt.Sprintf("loom.vcpus=%d", guestVCPUs)); err != nil {
		return err
	}
	st.Procs = append(st.Procs, proc{Name: "loomd", PID: ld.Process.Pid, Exe: "loomd"})
	if err := save(dir, st); err != nil {
		return err
	}
	fmt.Fprintf(out, "== loomd up (pid %d), log %s; image and profile \"host\" provision every new server\n", ld.Process.Pid, ldLog)

	// Every server gets a virtual Redfish BMC on the bridge, as in a rack;
	// loomd knows them from the rack file and powers the servers on.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// The host's way in: the API and the dashboard on uiAddr, carried into
	// the namespace to loomd's port (TLS end to end).
	uiLine := ""
	if uiAddr != "" {
		flog, err := os.Create(filepath.Join(dir, "forward.log"))
		if err != nil {
			return err
		}
		f := exec.Command(self, "forward", "-listen", uiAddr, "-ns", ln.NS, "-to", net.JoinHostPort(ln.Addr.Addr().String(), "8080"))
		f.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		f.Stdout, f.Stderr = flog, flog
		if err := f.Start(); err != nil {
			return fmt.Errorf("starting the dashboard's forwarder: %w", err)
		}
		_ = flog.Close()
		go func() { _ = f.Wait() }() // reap; its log says how it ended
		st.Procs = append(st.Procs, proc{Name: "forwarder", PID: f.Process.Pid, Exe: "forward"})
		if err := save(dir, st); err != nil {
			return err
		}
		uiLine = fmt.Sprintf("  open https://%s/ui/  # the dashboard: sign in with that token; the certificate is the lab CA's (%s)\n", uiAddr, filepath.Join(dir, "data", "ca.pem"))
		fmt.Fprintf(out, "== loomd's API and dashboard forwarded to https://%s (log %s)\n", uiAddr, filepath.Join(dir, "forward.log"))
	}
	pwFile := filepath.Join(dir, "bmc.password")
	password := rand.Text()
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	if _, err := fabric.PutCredential(ctx, api.Credential{Name: "lab", Username: "admin", Password: password}); err != nil {
		return err
	}
	rack := "mac,rack,slot,profile,bmc_address,credential\n"

	var servers []lab.Server
	exits := map[string]chan error{}
	for i := 1; i <= n; i++ {
		s := lab.Server{
			Name: fmt.Sprintf("server%d", i), MAC: fmt.Sprintf("52:54:00:4c:00:%02x", i), UUID: lab.NewUUID(),
			CPUs: cpus, MemoryMB: mem, DiskGB: disk, Dir: filepath.Join(dir, fmt.Sprintf("server%d", i)), Detach: true,
			Accel: accel, Off: true, NestedVirt: true, // lab hosts run guests
		}
		kind := strings.TrimSpace(kinds[(i-1)%len(kinds)])
		if err := s.Kind(kind); err != nil {
			return err
		}
		if err := os.Symlink(s.SerialLog(), filepath.Join(consoles, s.MAC+".log")); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		cmd, err := ln.Start(ctx, s, fmt.Sprintf("tap%d", i))
		if err != nil {
			return err
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		exits[s.Name] = exited
		st.Procs = append(st.Procs, proc{Name: s.Name, PID: cmd.Process.Pid, Exe: "qemu-system-x86_64"})
		if err := save(dir, st); err != nil {
			return err
		}
		servers = append(servers, s)
		bmcAddr := fmt.Sprintf("%s:%d", ln.Addr.Addr(), 8622+i)
		vlog, err := os.Create(filepath.Join(s.Dir, "bmc.log"))
		if err != nil {
			return err
		}
		v := ln.Command(context.Background(), self, "vbmc", "-qmp", s.QMP(), "-listen", bmcAddr, "-user", "admin", "-password-file", pwFile)
		v.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		v.Stdout, v.Stderr = vlog, vlog
		if err := v.Start(); err != nil {
			return fmt.Errorf("starting the BMC of %s: %w", s.Name, err)
		}
		_ = vlog.Close()             // the BMC writes through its own descriptor
		go func() { _ = v.Wait() }() // reap; its log says how it ended
		st.Procs = append(st.Procs, proc{Name: s.Name + " BMC", PID: v.Process.Pid, Exe: "vbmc"})
		if err := save(dir, st); err != nil {
			return err
		}
		rack += fmt.Sprintf("%s,lab,%d,host,http://%s,lab\n", s.MAC, i, bmcAddr)
		fmt.Fprintf(out, "== %s (%s, %s, %s), powered off, BMC http://%s, console %s\n", s.Name, kind, s.MAC, s.Dir, bmcAddr, s.SerialLog())
	}
	rackFile := filepath.Join(dir, "rack.csv")
	if err := os.WriteFile(rackFile, []byte(rack), 0o644); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // the BMCs start listening
	imp, err := fabric.ImportRack(ctx, []byte(rack))
	if err != nil {
		return fmt.Errorf("importing %s: %w", rackFile, err)
	}
	fmt.Fprintf(out, "== rack \"lab\" imported from %s: %d servers Enrolled\n", rackFile, len(imp.Created)+len(imp.Updated))
	pw, err := fabric.PowerRack(ctx, "lab", "on")
	if err != nil {
		return fmt.Errorf("powering the rack on: %w", err)
	}
	for _, p := range pw.Nodes {
		if p.Error != "" {
			return fmt.Errorf("powering on slot %s (%s): %s", p.Slot, p.Node, p.Error)
		}
	}
	fmt.Fprintf(out, "== rack powered on through the BMCs: the servers boot from the network under %s\n", accel.Accel)

	fmt.Fprintf(out, "== waiting for %d servers: netboot, register, imaging, host OS Ready (up to %v)\n", n, wait)
	start := time.Now()
	type result struct {
		s      lab.Server
		phases []api.Phase
		node   api.Node
		err    error
		secs   float64
	}
	results := make(chan result, len(servers))
	for _, s := range servers {
		go func() {
			// A server whose QEMU dies is reported at once, with QEMU's
			// own words, instead of after the whole wait.
			wctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			go func() {
				select {
				case err := <-exits[s.Name]:
					cancel(fmt.Errorf("its QEMU exited (%v): %s", err, lab.Tail(s.QEMULog(), 5)))
				case <-wctx.Done():
				}
			}()
			ph, node, err := lab.WatchPhases(wctx, fabric, s.MAC, wait, func(n api.Node) bool {
				return n.Phase == api.PhaseReady || n.Phase == api.PhaseFailed
			})
			if cause := context.Cause(wctx); err != nil && cause != nil && cause != context.Canceled {
				err = cause
			}
			results <- result{s, ph, node, err, time.Since(start).Seconds()}
		}()
	}
	failed := 0
	for range servers {
		r := <-results
		if r.err != nil || r.node.Phase == api.PhaseFailed {
			failed++
		}
		switch {
		case r.err != nil:
			fmt.Fprintf(out, "!! %s: %v; its console:\n%s\n", r.s.Name, r.err, lab.Tail(r.s.SerialLog(), 15))
		case r.node.Phase == api.PhaseFailed:
			fmt.Fprintf(out, "!! %s (%s) Failed after %.0fs: %s\n", r.s.Name, r.node.ID, r.secs, r.node.Reason)
		default:
			fmt.Fprintf(out, "   %s is %s Ready after %.0fs: %v\n", r.s.Name, r.node.ID, r.secs, r.phases)
		}
	}
	env := []string{"LOOM_ADDR=" + fabric.BaseURL, "LOOM_TOKEN=" + fabric.Token}
	cmd := exec.CommandContext(ctx, "build/bin/loom", "nodes")
	cmd.Env, cmd.Stdout, cmd.Stderr = append(os.Environ(), env...), out, out
	fmt.Fprintln(out)
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(out, "loom nodes: %v\n", err)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d servers did not reach Ready (above); the lab is left as it is to look at: %s/, and 'sudo make lab-down' removes it", failed, len(servers), dir)
	}
	svcLines := ""
	if svcFile != "" {
		svc, err := deployService(ctx, ln, fabric, svcFile, svcWait, out)
		if err != nil {
			return fmt.Errorf("%w; the lab is left as it is to look at (build/bin/loom instance list), and 'sudo make lab-down' removes it", err)
		}
		for _, ep := range svc.Endpoints {
			svcLines += fmt.Sprintf("  sudo ip netns exec %s curl -d 'hello' http://%s/entries; sudo ip netns exec %s curl http://%s/\n", ln.NS, ep.Address, ln.NS, ep.Address)
		}
		svcLines += fmt.Sprintf("  build/bin/loom service show %s; build/bin/loom instance list %s; build/bin/loom service queues %s; build/bin/loom usage\n", svc.Name, svc.Name, svc.Name)
	}
	fmt.Fprintf(out, `
The lab is up (servers under %s). Look around:
  export LOOM_ADDR=%s
  export LOOM_TOKEN=$(sudo cat %s)
  build/bin/loom nodes
  build/bin/loom rack show lab
  build/bin/loom node power cycle ID   # through its virtual BMC
  build/bin/loom node show ID
  build/bin/loom node reprovision ID && build/bin/loom node watch ID
  build/bin/loom image list; build/bin/loom profile list
  tail -f %s/server1/serial.log     # a server's console
  tail -f %s                        # loomd
%s%sTake it down with: sudo make lab-down
`, accel.Accel, fabric.BaseURL, filepath.Join(dir, "data", "operator.token"), dir, ldLog, uiLine, svcLines)
	return nil
}

// deployService deploys the service of manifest, waits for its instances
// and shows an entry going in at its endpoint and coming back processed
// (the guestbook's /entries and /; another service's endpoints are only
// printed).
func deployService(ctx context.Context, ln *lab.Net, fabric *client.Client, manifest string, d time.Duration, out io.Writer) (api.Service, error) {
	fmt.Fprintf(out, "\n== deploying %s (packages from build/roles): its guests boot inside the servers (QEMU in QEMU: minutes under TCG), waiting up to %v\n", manifest, d)
	start := time.Now()
	svc, err := lab.Deploy(ctx, fabric, manifest, "build/roles", d, out)
	if err != nil {
		return svc, err
	}
	fmt.Fprintf(out, "   service %s Ready after %.0fs\n", svc.Name, time.Since(start).Seconds())
	for _, ep := range svc.Endpoints {
		if ep.Error != "" {
			return svc, fmt.Errorf("service %s: endpoint of %s: %s", svc.Name, ep.Role, ep.Error)
		}
		fmt.Fprintf(out, "   endpoint of %s: http://%s (inside namespace %s)\n", ep.Role, ep.Address, ln.NS)
	}
	if svc.Name != "guestbook" || len(svc.Endpoints) == 0 {
		return svc, nil
	}
	url := "http://" + svc.Endpoints[0].Address
	entry := "hello from the lab at " + time.Now().UTC().Format(time.TimeOnly)
	curl := func(args ...string) (string, error) {
		b, err := ln.Command(ctx, "curl", append([]string{"-sS", "--max-time", "20"}, args...)...).CombinedOutput()
		return string(b), err
	}
	fmt.Fprintf(out, "== curl -d '%s' %s/entries\n", entry, url)
	b, err := curl("-d", entry, url+"/entries")
	if err != nil {
		return svc, fmt.Errorf("posting an entry: %v: %s", err, b)
	}
	fmt.Fprint(out, "   ", b)
	processed := strings.ToUpper(entry)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		page, err := curl(url + "/")
		if err == nil && strings.Contains(page, processed) {
			fmt.Fprintf(out, "== curl %s/  (the entry, processed by a worker instance)\n%s", url, page)
			return svc, nil
		}
		if time.Now().After(deadline) {
			return svc, fmt.Errorf("the entry did not come back processed in 3 minutes; the last page: %v %s", err, page)
		}
		time.Sleep(2 * time.Second)
	}
}

func down(dir string, out io.Writer) error {
	for _, s := range lab.Sweep() {
		fmt.Fprintln(out, "== swept", s)
	}
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(out, "no lab is up (no", statePath(dir)+")")
		return nil
	}
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("reading %s: %w", statePath(dir), err)
	}
	for i := len(st.Procs) - 1; i >= 0; i-- {
		p := st.Procs[i]
		if !running(p) {
			continue
		}
		if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil && err != syscall.ESRCH {
			fmt.Fprintf(out, "== could not stop %s (pid %d): %v\n", p.Name, p.PID, err)
			continue
		}
		for t := 0; t < 50 && running(p); t++ {
			time.Sleep(100 * time.Millisecond)
		}
		if running(p) {
			if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
				fmt.Fprintf(out, "== could not kill %s (pid %d): %v\n", p.Name, p.PID, err)
				continue
			}
		}
		fmt.Fprintf(out, "== stopped %s (pid %d)\n", p.Name, p.PID)
	}
	if st.NS != "" {
		if err := exec.Command("ip", "netns", "del", st.NS).Run(); err == nil {
			fmt.Fprintf(out, "== removed namespace %s\n", st.NS)
		}
	}
	return os.Remove(statePath(dir))
}

// running reports whether pid is alive and still the program we started.
func running(p proc) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
	if err != nil {
		return false
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if strings.Contains(string(stat), ") Z ") {
		return false // a zombie: already dead
	}
	return strings.Contains(string(b), p.Exe)
}

// vbmc serves a virtual Redfish BMC for one server until ctx ends.
func vbmc(ctx context.Context, qmpSock, listen, user, passFile string) error {
	if qmpSock == "" || listen == "" || passFile == "" {
		return errors.New("vbmc: -qmp, -listen and -password-file are required")
	}
	pw, err := os.ReadFile(passFile)
	if err != nil {
		return fmt.Errorf("vbmc: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	b := &lab.VirtualBMC{QMP: qmpSock, Name: filepath.Base(filepath.Dir(qmpSock)), Username: user, Password: strings.TrimSpace(string(pw)), Log: log}
	srv := &http.Server{Addr: listen, Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close() // ListenAndServe then returns ErrServerClosed
	}()
	log.Info("lab BMC: serving Redfish", "addr", listen, "qmp", qmpSock)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("vbmc: %w", err)
	}
	return nil
}
