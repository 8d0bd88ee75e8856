package accel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/agent/atomicfile"
	"github.com/loomfabric/loom/fabric/api"
)

// cacheKey is what a verdict holds for: change any part and the probe
// runs again.
type cacheKey struct {
	Probe      int      `json:"probe"`      // probeVersion: a changed probe judges again
	QEMU       string   `json:"qemu"`       // the binary's path and its --version line
	HostKernel string   `json:"hostKernel"` // release and build of the running kernel (KVM lives there)
	Kernel     string   `json:"kernel"`     // the probe kernel's version string
	CPUs       []string `json:"cpus"`
}

type cacheFile struct {
	Key     cacheKey  `json:"key"`
	Verdict api.Accel `json:"verdict"`
	At      time.Time `json:"at"`
}

func (c Config) key() (cacheKey, error) {
	bin, err := exec.LookPath(c.qemu())
	if err != nil {
		return cacheKey{}, err
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return cacheKey{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	ver, _ := os.ReadFile("/proc/sys/kernel/version")
	kv, err := KernelVersion(c.Kernel)
	if err != nil {
		return cacheKey{}, err
	}
	return cacheKey{
		Probe:      probeVersion,
		QEMU:       bin + " " + firstLine(string(out)),
		HostKernel: strings.TrimSpace(string(rel)) + " " + strings.TrimSpace(string(ver)),
		Kernel:     kv,
		CPUs:       c.cpus(),
	}, nil
}

// probeVersion changes whenever the probe judges differently.
const probeVersion = 3

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

// KernelVersion reads the version string of a bzImage (the setup header's
// kernel_version field), so that two copies of one kernel share a cached
// verdict. A file that is no bzImage is named by its size and time.
func KernelVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("probe kernel: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	hdr := make([]byte, 0x210)
	if _, err := f.ReadAt(hdr, 0); err == nil && string(hdr[0x202:0x206]) == "HdrS" {
		off := int64(binary.LittleEndian.Uint16(hdr[0x20e:])) + 0x200
		b := make([]byte, 256)
		n, _ := f.ReadAt(b, off)
		if s, _, ok := strings.Cut(string(b[:n]), "\x00"); ok && s != "" {
			return s, nil
		}
	}
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s size %d modified %s", filepath.Base(path), st.Size(), st.ModTime().UTC().Format(time.RFC3339)), nil
}

func readCache(dir string, key cacheKey) (api.Accel, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "accel.json"))
	if err != nil {
		return api.Accel{}, false
	}
	var f cacheFile
	if json.Unmarshal(b, &f) != nil || !sameKey(f.Key, key) || f.Verdict.Accel == "" {
		return api.Accel{}, false
	}
	return f.Verdict, true
}

func sameKey(a, b cacheKey) bool {
	return a.Probe == b.Probe && a.QEMU == b.QEMU && a.HostKernel == b.HostKernel && a.Kernel == b.Kernel &&
		strings.Join(a.CPUs, "\n") == strings.Join(b.CPUs, "\n")
}

// writeCache replaces accel.json atomically (temp file, fsync, rename).
func writeCache(dir string, key cacheKey, v api.Accel) error {
	b, err := json.MarshalIndent(cacheFile{Key: key, Verdict: v, At: time.Now().UTC()}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, "accel.json"), append(b, '\n'), 0o644)
}

// lock takes an exclusive flock on path, waiting until ctx ends.
func lock(ctx context.Context, path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// Closing the file drops the lock even if the unlock failed.
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK {
			_ = f.Close() // the lock error is the one to report
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close() // never locked
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
