package vmtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConsoleExpect(t *testing.T) {
	p := filepath.Join(t.TempDir(), "serial.log")
	c := NewConsole(p, nil)
	defer c.Close()
	if err := c.Expect("LOOM-MARK network", 30*time.Millisecond); err == nil || !strings.Contains(err.Error(), "lacks") {
		t.Fatalf("before the file exists: %v, want a timeout", err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	go func() {
		for _, s := range []string{"booting\nLOOM-MARK net", "work ip=10.0.0.5\n", "LOOM-MARK registered node=n-1\n"} {
			time.Sleep(20 * time.Millisecond)
			f.WriteString(s)
		}
	}()
	// A marker split across two writes is found once both are in.
	if err := c.Expect("LOOM-MARK network ip=10.0.0.5", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Expect("LOOM-MARK registered", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Text(), "booting\n") || !c.Has("node=n-1") {
		t.Errorf("text %q", c.Text())
	}
}

func TestConsoleExited(t *testing.T) {
	p := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(p, []byte("Kernel panic - not syncing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := NewConsole(p, func() string { return "QEMU exited (exit status 1)" })
	defer c.Close()
	start := time.Now()
	err := c.Expect("LOOM-MARK registered", time.Minute)
	if err == nil || !strings.Contains(err.Error(), "QEMU exited") || time.Since(start) > 5*time.Second {
		t.Errorf("a dead machine: %v after %v, want its exit at once", err, time.Since(start))
	}
	// What it printed before it ended still counts.
	if err := c.Expect("Kernel panic", time.Minute); err != nil {
		t.Errorf("a marker printed before the end: %v", err)
	}
}

func TestBuilt(t *testing.T) {
	if err := Built("go.mod"); err != nil {
		t.Errorf("go.mod: %v", err)
	}
	err := Built("go.mod", "build/nothing-here", "build/nor-here")
	if err == nil || !strings.Contains(err.Error(), "build/nothing-here, build/nor-here missing") {
		t.Errorf("missing outputs: %v", err)
	}
}

func TestConsoleTruncated(t *testing.T) {
	p := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(p, []byte("first boot, a long line of output\nLOOM-MARK registered\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := NewConsole(p, nil)
	defer c.Close()
	if !c.Has("LOOM-MARK registered") {
		t.Fatal("marker not seen")
	}
	// The machine starts again on the same log, truncated.
	if err := os.WriteFile(p, []byte("second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c.Has("LOOM-MARK registered") || c.Text() != "second\n" {
		t.Errorf("after truncation the console says %q", c.Text())
	}
	// Made anew (another inode).
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("third boot, longer than the second\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c.Text() != "third boot, longer than the second\n" {
		t.Errorf("after re-creation the console says %q", c.Text())
	}
}
