package guests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestStateSaveLoad(t *testing.T) {
	dir := t.TempDir()
	st, err := loadState(dir)
	if err != nil || st != (persisted{}) {
		t.Fatalf("a new guest's state: %+v, %v; want zero, nil", st, err)
	}
	want := persisted{Restarts: 3, Rebooted: 7, IngressPort: 40123, LastEvent: "GUEST_PANICKED"}
	if err := want.save(dir); err != nil {
		t.Fatal(err)
	}
	if got, err := loadState(dir); err != nil || got != want {
		t.Fatalf("loaded %+v, %v; want %+v", got, err, want)
	}
	// Saved again over the old one, nothing else left in the directory.
	want.Restarts++
	if err := want.save(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != stateFile {
		t.Errorf("directory holds %v, want only %s", ents, stateFile)
	}
	if got, _ := loadState(dir); got != want {
		t.Errorf("after a second save: %+v, want %+v", got, want)
	}
}

func TestStateErrors(t *testing.T) {
	dir := t.TempDir()
	if err := (persisted{Restarts: 1}).save(filepath.Join(dir, "gone")); err == nil {
		t.Error("saving into a missing directory succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(`{"restarts": 2,`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(dir); err == nil || !strings.Contains(err.Error(), stateFile) {
		t.Errorf("a torn state file: err %v, want one naming %s", err, stateFile)
	}
	// A state file the agent cannot replace: the save fails, the old state
	// is intact and no temporary file is left.
	ro := t.TempDir()
	old := persisted{Restarts: 5}
	if err := old.save(ro); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(ro, 0o700)
	if os.Geteuid() != 0 { // root writes anyway
		if err := (persisted{Restarts: 6}).save(ro); err == nil {
			t.Error("saving into a read-only directory succeeded")
		}
		if got, _ := loadState(ro); got != old {
			t.Errorf("after a failed save: %+v, want the old %+v", got, old)
		}
	}
}

func TestStateLegacyFiles(t *testing.T) {
	dir := t.TempDir()
	for name, v := range map[string]string{"restarts": "4\n", "rebooted": "2", "ingress.port": "40999", "last-event": "SHUTDOWN"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want := persisted{Restarts: 4, Rebooted: 2, IngressPort: 40999, LastEvent: "SHUTDOWN"}
	if got, err := loadState(dir); err != nil || got != want {
		t.Errorf("from the old per-counter files: %+v, %v; want %+v", got, err, want)
	}
}

// TestStateAcrossRestart: what one host agent's supervisor persisted, the
// next one (started on the same directory) reports.
func TestStateAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1 := New(Config{Dir: dir, DiskBytesPerSec: -1, QEMU: "/nonexistent/qemu"})
	if err := s1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	g := s1.newGuest("vm-1")
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 { // concurrent changes: none lost, the last save wins
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.persist(func(st *persisted) { st.Restarts++ })
		}()
	}
	wg.Wait()
	g.persist(func(st *persisted) { st.Rebooted = 3 })

	s2 := New(Config{Dir: dir, DiskBytesPerSec: -1, QEMU: "/nonexistent/qemu"})
	if err := s2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rep := s2.Report()
	if len(rep) != 1 || rep[0].ID != "vm-1" || rep[0].Restarts != 20 || rep[0].Rebooted != 3 {
		t.Fatalf("the next supervisor reports %+v, want vm-1 with 20 restarts, rebooted 3", rep)
	}
}

// TestPersistUnchanged: a change that changes nothing writes nothing (a
// start or a repeated event would otherwise fsync the same state again).
func TestPersistUnchanged(t *testing.T) {
	s := New(Config{Dir: t.TempDir(), DiskBytesPerSec: -1})
	g := s.newGuest("vm-1")
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	g.persist(func(st *persisted) { st.LastEvent = "" })
	if _, err := os.Stat(filepath.Join(g.dir, stateFile)); !os.IsNotExist(err) {
		t.Errorf("an unchanged state was written (%v)", err)
	}
	g.persist(func(st *persisted) { st.LastEvent = "RESET" })
	if st, err := loadState(g.dir); err != nil || st.LastEvent != "RESET" {
		t.Errorf("a changed state: %+v, %v", st, err)
	}
}
