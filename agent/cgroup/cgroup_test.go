package cgroup

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// A real group on this machine (v2 or v1): limits written, a process moved
// in, its CPU time counted, the group removed after.
func TestGroupOnThisMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create control groups")
	}
	g, err := New("test-"+time.Now().Format("150405.000"), Limits{CPUs: 1, MemoryBytes: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// The child waits until it is in the group before it works: memory is
	// charged where it is allocated, and nothing moves with a process.
	cmd := exec.Command("sh", "-c", `read go; x=$(head -c 8000000 /dev/zero | tr '\0' a); i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // sh and the children it forked
		cmd.Wait()
		if err := g.Remove(); err != nil {
			t.Errorf("remove: %v", err)
		}
	}()
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if !g.Has(cmd.Process.Pid) {
		t.Fatal("the process is not in the group after Add")
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for u := g.Usage(); (u.CPUSeconds == 0 || u.MemoryBytes == 0) && time.Now().Before(deadline); u = g.Usage() {
		time.Sleep(100 * time.Millisecond)
	}
	u := g.Usage()
	if u.CPUSeconds == 0 || u.MemoryBytes == 0 {
		t.Errorf("usage = %+v, want CPU time and memory counted", u)
	}
}

func TestCPUQuota(t *testing.T) {
	for _, c := range []struct {
		l             Limits
		quota, period int
	}{
		{Limits{}, 0, 100000},
		{Limits{CPUs: 2}, 200000, 100000},
		{Limits{MilliCPUs: 500}, 50000, 100000},
		{Limits{MilliCPUs: 500, CPUPeriod: 2 * time.Millisecond}, 1000, 2000},
		{Limits{MilliCPUs: 100, CPUPeriod: 2 * time.Millisecond}, 1000, 2000}, // the kernel's floor
		{Limits{CPUs: 1, MilliCPUs: 250}, 25000, 100000},                      // MilliCPUs wins
	} {
		if q, p := c.l.cpuQuota(); q != c.quota || p != c.period {
			t.Errorf("%+v: quota %d period %d, want %d %d", c.l, q, p, c.quota, c.period)
		}
	}
}
