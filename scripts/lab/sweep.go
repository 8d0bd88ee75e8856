package lab

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// OwnerEnv marks every process a test run starts (they inherit it, down
// to the QEMUs a host agent starts in sessions of their own), so that the
// next run can find what an interrupted one left behind. Its value is
// "PID:STARTTIME" of the test process.
const OwnerEnv = "LOOM_TEST_OWNER"

var claimOnce sync.Once

// Claim sweeps what interrupted test runs left behind and marks this
// process as the owner of whatever it starts from now on. vmtest.Require calls
// it; it runs once per process.
func Claim() {
	claimOnce.Do(func() {
		for _, s := range Sweep() {
			fmt.Fprintln(os.Stderr, "lab: swept", s)
		}
		if id := processID(os.Getpid()); id != "" {
			if err := os.Setenv(OwnerEnv, id); err != nil {
				fmt.Fprintln(os.Stderr, "lab: what this process makes cannot be marked as its own:", err)
			}
		}
	})
}

// TestNS returns a fresh name for a test's namespace: "loom-t-PID-XXXXXX",
// PID being this process, so that Sweep can tell when it is orphaned.
func TestNS() string { return fmt.Sprintf("loom-t-%d-%s", os.Getpid(), Suffix()) }

// processID is "PID:STARTTIME" (field 22 of /proc/PID/stat), or "" when
// the process is gone: a PID alone may have been reused.
func processID(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return ""
	}
	return fmt.Sprintf("%d:%s", pid, f[19])
}

// ownerGone reports whether an OwnerEnv value names a process that no
// longer runs.
func ownerGone(owner string) bool {
	pidStr, _, ok := strings.Cut(owner, ":")
	pid, err := strconv.Atoi(pidStr)
	if !ok || err != nil || pid <= 0 {
		return false // not ours to judge
	}
	return processID(pid) != owner
}

// Sweep kills the processes whose OwnerEnv names a test process that is
// gone, and removes test namespaces (loom-t-PID-*) whose PID is gone,
// with whatever still runs in them. It returns what it did.
func Sweep() []string {
	var did []string
	self := os.Getpid()
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil || pid == self || pid == 1 {
			continue
		}
		env, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			owner, ok := bytes.CutPrefix(kv, []byte(OwnerEnv+"="))
			if ok && ownerGone(string(owner)) {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					did = append(did, fmt.Sprintf("process %d (%s) of a test run that is gone", pid, comm(pid)))
				}
				break
			}
		}
	}
	nss, _ := filepath.Glob("/run/netns/loom-t-*")
	for _, ns := range nss {
		name := filepath.Base(ns)
		f := strings.Split(name, "-")
		if len(f) != 4 {
			continue
		}
		pid, err := strconv.Atoi(f[2])
		if err != nil || processID(pid) != "" {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
			for _, s := range strings.Fields(string(out)) {
				if p, err := strconv.Atoi(s); err == nil && p != self {
					_ = syscall.Kill(p, syscall.SIGKILL) // gone already is fine: the namespace goes next
				}
			}
		}
		if exec.Command("ip", "netns", "del", name).Run() == nil {
			did = append(did, "namespace "+name+" of a test run that is gone")
		}
	}
	return did
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}
