package guests_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
	"github.com/loomfabric/loom/scripts/vmtest"
)

const root = "../.."

// require skips (or, with LOOM_REQUIRE_VM=1, fails) without root, QEMU,
// the guest OS and the role packages from `make images`. A kvm asked for
// (LOOM_ACCEL=kvm) that cannot run a guest fails at once.
func require(t *testing.T) api.Accel {
	t.Helper()
	return vmtest.RequireGuest(t, "build/roles/web.tar", "build/roles/worker.tar")
}

// rig is loomd, the loom CLI and a host agent running on this machine.
type rig struct {
	t              *testing.T
	dir, bin, addr string
	env            []string
	agent          *exec.Cmd
	agentExit      chan struct{}
	agentLog       string
	guestDir       string
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t, dir: t.TempDir()}
	r.bin = vmtest.Binaries(t)
	r.addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	data := filepath.Join(r.dir, "data")
	loomd := exec.Command(filepath.Join(r.bin, "loomd"), "--data-dir", data, "--api", r.addr, "--heartbeat", "2s")
	loomd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, _ := os.Create(filepath.Join(r.dir, "loomd.log"))
	loomd.Stdout, loomd.Stderr = logf, logf
	if err := loomd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loomd.Process.Kill(); loomd.Wait() })
	for i := 0; ; i++ {
		tok, err := os.ReadFile(filepath.Join(data, "operator.token"))
		if err == nil {
			r.env = []string{"LOOM_ADDR=https://" + r.addr, "LOOM_TOKEN=" + strings.TrimSpace(string(tok)), "LOOM_CA=" + filepath.Join(data, "ca.pem")}
			if _, err := r.loomErr("nodes"); err == nil {
				break
			}
		}
		if i > 300 {
			t.Fatalf("loomd not answering; its log:\n%s", lab.Tail(filepath.Join(r.dir, "loomd.log"), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.guestDir = filepath.Join(r.dir, "host")
	r.agentLog = filepath.Join(r.dir, "agent.log")
	t.Cleanup(r.cleanup)
	return r
}

// startAgent runs loom-agent in host mode, as a service on this machine,
// with extra flags.
func (r *rig) startAgent(extra ...string) {
	abs := func(p string) string { a, _ := filepath.Abs(filepath.Join(root, p)); return a }
	cmd := exec.Command(filepath.Join(r.bin, "loom-agent"), "host",
		"--fabric", "https://"+r.addr, "--token-file", filepath.Join(r.dir, "data", "enroll.token"), "--ca-file", filepath.Join(r.dir, "data", "ca.pem"),
		"--ip", "127.0.0.1", "--ingress-ip", "127.0.0.1", "--guest-dir", r.guestDir, "--accel-cache", abs("build"),
		"--guest-kernel", abs("build/guest/vmlinuz"), "--guest-initrd", abs("build/guest/initramfs.cpio.xz"))
	cmd.Args = append(cmd.Args, extra...)
	logf, _ := os.OpenFile(r.agentLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // its guests live on (sessions of their own) and are swept by the next run
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.agent, r.agentExit = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(r.agentExit) }()
}

func (r *rig) stopAgent() {
	r.agent.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.agentExit:
	case <-time.After(10 * time.Second):
		r.t.Error("host agent did not exit on SIGTERM")
		r.agent.Process.Kill()
		<-r.agentExit
	}
}

// cleanup kills the guests' QEMUs (by their pidfiles) and the agent.
func (r *rig) cleanup() {
	if r.agent != nil {
		r.agent.Process.Kill()
	}
	pids, _ := filepath.Glob(filepath.Join(r.guestDir, "guests", "*", "qemu.pid"))
	for _, p := range pids {
		if pid := readPID(p); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if r.t.Failed() {
		r.t.Logf("host agent log:\n%s", lab.Tail(r.agentLog, 40))
		r.t.Logf("loomd log:\n%s", lab.Tail(filepath.Join(r.dir, "loomd.log"), 40))
		logs, _ := filepath.Glob(filepath.Join(r.guestDir, "guests", "*", "console.log"))
		for _, l := range logs {
			r.t.Logf("%s:\n%s", l, lab.Tail(l, 40))
		}
	}
}

func readPID(p string) int {
	b, _ := os.ReadFile(p)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func (r *rig) loomErr(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(r.bin, "loom"), args...)
	cmd.Env = append(os.Environ(), r.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("loom %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (r *rig) loom(args ...string) string {
	r.t.Helper()
	out, err := r.loomErr(args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *rig) vm(id string) api.VM {
	r.t.Helper()
	var v api.VM
	if err := json.Unmarshal([]byte(r.loom("vm", "show", id, "-o", "json")), &v); err != nil {
		r.t.Fatal(err)
	}
	return v
}

// waitVM polls until ok(vm) or the deadline.
func (r *rig) waitVM(id, what string, d time.Duration, ok func(api.VM) bool) api.VM {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		v := r.vm(id)
		if ok(v) {
			return v
		}
		select {
		case <-r.agentExit:
			r.t.Fatalf("vm %s: waiting for %s, the host agent exited; its log:\n%s", id, what, lab.Tail(r.agentLog, 40))
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("vm %s: not %s after %v: %+v", id, what, d, v)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (r *rig) qemuPID(id string) int {
	return readPID(filepath.Join(r.guestDir, "guests", id, "qemu.pid"))
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// cgroupLimits reads a process's CPU quota (µs per 100 ms) and memory
// limit from its control groups (v2, or the v1 cpu and memory hierarchies).
func cgroupLimits(t *testing.T, pid int) (quota, mem string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string { v, _ := os.ReadFile(p); return strings.TrimSpace(string(v)) }
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		switch {
		case parts[1] == "" && fileExists("/sys/fs/cgroup/cgroup.controllers"):
			quota = strings.Fields(read("/sys/fs/cgroup"+parts[2]+"/cpu.max") + " ")[0]
			mem = read("/sys/fs/cgroup" + parts[2] + "/memory.max")
		case strings.Contains(","+parts[1]+",", ",cpu,"):
			quota = read("/sys/fs/cgroup/cpu" + parts[2] + "/cpu.cfs_quota_us")
		case parts[1] == "memory":
			mem = read("/sys/fs/cgroup/memory" + parts[2] + "/memory.limit_in_bytes")
		}
	}
	return quota, mem
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func running(v api.VM) bool { return v.State == api.VMStateRunning }

// TestGuestsThroughTheFabric: loomd and a host agent on this machine; two
// guests created with the CLI boot with no NIC, reach the world only over
// the channel, serve HTTP through the host's ingress, get refused an
// unoffered service, are restarted after kill -9, survive a host agent
// restart without a reboot, reboot over QMP, stop gracefully and go away
// when deleted.
func TestGuestsThroughTheFabric(t *testing.T) {
	acc := require(t)
	r := newRig(t)
	r.loom("image", "add", filepath.Join(root, "build/roles/web.tar"), "--name", "web")
	r.loom("image", "add", filepath.Join(root, "build/roles/worker.tar"), "--name", "worker")
	r.startAgent()
	waitNodeReady(t, r)
	// The host says how its guests run: the machine's verdict, with why.
	var nodeID string
	for _, l := range strings.Split(r.loom("nodes"), "\n") {
		if strings.Contains(l, "Ready") {
			nodeID = strings.Fields(l)[0]
		}
	}
	if show := r.loom("node", "show", nodeID); !strings.Contains(show, "Guests run:") || !strings.Contains(show, acc.String()) {
		t.Errorf("loom node show %s lacks the accelerator %q:\n%s", nodeID, acc, show)
	}

	web := strings.TrimSpace(r.loom("vm", "create", "--vcpus", "1", "--memory", "256", "--package", "web", "--set", "greeting=hi there"))
	worker := strings.TrimSpace(r.loom("vm", "create", "--memory", "256MiB", "--package", "worker", "--set", "job=crunch"))
	if _, err := r.loomErr("vm", "create", "--vcpus", "64", "--package", "web"); err == nil || !strings.Contains(err.Error(), "no Ready node has 64 vCPUs") {
		t.Errorf("an oversized VM: %v, want a refusal naming what is missing", err)
	}
	if _, err := r.loomErr("vm", "create", "--package", "nosuch"); err == nil || !strings.Contains(err.Error(), "package") {
		t.Errorf("a VM with an unknown package: %v, want an error naming the package", err)
	}

	if _, err := r.loomErr("image", "rm", "web"); err == nil || !strings.Contains(err.Error(), "in use by vm "+web) {
		t.Errorf("image rm of a package a VM uses: %v, want a refusal naming the VM", err)
	}

	start := time.Now()
	w := r.waitVM(web, "Running", 4*time.Minute, running)
	r.waitVM(worker, "Running", 4*time.Minute, running)
	t.Logf("both guests Running %.1fs after create", time.Since(start).Seconds())
	if strings.Join(w.Interfaces, ",") != "lo" {
		t.Errorf("the web guest sees interfaces %v, want only lo", w.Interfaces)
	}
	for _, a := range []string{"netdev", "virtio-net"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.qemuPID(web)))
		if strings.Contains(string(b), a) {
			t.Errorf("the guest's QEMU has a NIC (%s)", a)
		}
	}
	if w.Endpoint == "" {
		t.Fatal("the web VM has no endpoint")
	}
	if q, m := cgroupLimits(t, r.qemuPID(web)); q != "100000" || m != fmt.Sprint((256+256)<<20) {
		t.Errorf("the web guest's control group: CPU quota %q, memory limit %q; want one CPU (100000) and 512 MiB", q, m)
	}
	url := "http://" + w.Endpoint
	if code, body := get(t, url+"/"); code != 200 || body != "hello from "+web+": hi there\n" {
		t.Errorf("GET %s/ = %d %q, want the role's greeting", url, code, body)
	}
	if code, body := get(t, url+"/connect?service=shell"); code != http.StatusForbidden || !strings.Contains(body, `service "shell" not offered`) {
		t.Errorf("an unoffered service: %d %q, want 403 refused", code, body)
	}
	if !strings.Contains(lab.Tail(r.agentLog, 40), "refused a stream") {
		t.Error("the host agent did not log the refused stream")
	}
	if code, _ := get(t, url+"/connect?service=goal"); code != 200 {
		t.Errorf("an offered service through the local endpoint: %d, want 200", code)
	}

	// kill -9 of the web guest's QEMU: reported, restarted.
	pid := r.qemuPID(web)
	syscall.Kill(pid, syscall.SIGKILL)
	v := r.waitVM(web, "restarted and Running", 4*time.Minute, func(v api.VM) bool { return v.Restarts == 1 && running(v) && r.qemuPID(web) != pid })
	if code, _ := get(t, url+"/healthz"); code != 200 {
		t.Errorf("after the restart the endpoint answers %d", code)
	}
	t.Logf("restarted after kill -9: %+v", v.VMStatus)

	// The host agent restarts: both guests keep running, adopted.
	pids := map[string]int{web: r.qemuPID(web), worker: r.qemuPID(worker)}
	r.stopAgent()
	r.startAgent()
	time.Sleep(3 * time.Second)
	for id, p := range pids {
		v := r.waitVM(id, "Running after the agent restart", 2*time.Minute, running)
		if r.qemuPID(id) != p || !alive(p) {
			t.Errorf("vm %s: QEMU %d replaced by %d across the agent restart", id, p, r.qemuPID(id))
		}
		if id == web && v.Restarts != 1 {
			t.Errorf("vm %s: restarts %d after adoption, want 1", id, v.Restarts)
		}
	}
	if !strings.Contains(lab.Tail(r.agentLog, 40), "guest adopted") {
		t.Error("the new host agent did not adopt the guests")
	}
	if code, body := get(t, url+"/"); code != 200 || !strings.Contains(body, web) {
		t.Errorf("after the agent restart GET / = %d %q", code, body)
	}

	// QMP reboot: same QEMU, the guest comes back, booting its kernel (a
	// guest resumed from a snapshot has no boot on its console before).
	boots := func() int {
		console, _ := os.ReadFile(filepath.Join(r.guestDir, "guests", web, "console.log"))
		return strings.Count(string(console), "LOOM-MARK start mode=guest")
	}
	before := boots()
	r.loom("vm", "reboot", web)
	r.waitVM(web, "rebooted", time.Minute, func(v api.VM) bool { return v.Rebooted == 1 })
	r.waitVM(web, "Running after the reboot", 3*time.Minute, running)
	if r.qemuPID(web) != pids[web] {
		t.Error("a reboot replaced the QEMU process")
	}
	if n := boots(); n != before+1 {
		t.Errorf("the guest's console shows %d boots, want %d (the reboot)", n, before+1)
	}

	// Usage is metered.
	v = r.vm(web)
	if v.Usage == nil || v.Usage.CPUSeconds <= 0 || v.Usage.ChannelBytes == 0 || v.Usage.MemoryBytes == 0 {
		t.Errorf("usage = %+v, want CPU time, memory and channel bytes", v.Usage)
	}

	// Graceful stop of the worker: the guest agent powers off on request.
	wpid := r.qemuPID(worker)
	r.loom("vm", "stop", worker)
	r.waitVM(worker, "Stopped", 2*time.Minute, func(v api.VM) bool { return v.State == api.VMStateStopped })
	if alive(wpid) {
		t.Error("the stopped guest's QEMU still runs")
	}
	wc, _ := os.ReadFile(filepath.Join(r.guestDir, "guests", worker, "console.log"))
	if !strings.Contains(string(wc), "LOOM-MARK shutdown") || !strings.Contains(string(wc), "tick 1 (job crunch)") {
		t.Errorf("the worker's console lacks its ticks or the graceful shutdown:\n%s", lab.Tail(filepath.Join(r.guestDir, "guests", worker, "console.log"), 40))
	}

	// Delete: gone from the fabric and from the host.
	r.loom("vm", "delete", worker)
	deadline := time.Now().Add(time.Minute)
	for strings.Contains(r.loom("vm", "list"), worker) {
		if time.Now().After(deadline) {
			t.Fatalf("deleted vm %s still listed:\n%s", worker, r.loom("vm", "list"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(r.guestDir, "guests", worker)); !os.IsNotExist(err) {
		t.Errorf("the deleted guest's directory is still there: %v", err)
	}
}
