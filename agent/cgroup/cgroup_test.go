package cgroup

import (
	"os"
	"os/exec"
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
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
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
	deadline := time.Now().Add(10 * time.Second)
	for g.Usage().CPUSeconds == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	u := g.Usage()
	if u.CPUSeconds == 0 || u.MemoryBytes == 0 {
		t.Errorf("usage = %+v, want CPU time and memory counted", u)
	}
}
