// Package snapshot keeps the saved states guests start from instead of
// booting: a template guest is booted once per machine (guest OS, QEMU,
// accelerator, size and devices, disk base) to the point where its guest
// agent waits for its host, and saved (vmm.VM.Save); every later guest of
// that machine is resumed from the state (vmm.Spec.Incoming) on a disk of
// its own, and learns its identity, the time and fresh entropy from its
// host over the channel.
//
// Each state lives in Dir/<key>/ (state, manifest.json). The key hashes
// everything the state depends on, so a new guest OS, QEMU or machine
// option is a new key: the state of the old one is stale and removed when
// the new one is built. A state that fails to restore is discarded by the
// caller (Discard) and built again on the next Get.
package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loomfabric/loom/agent/atomicfile"
	"github.com/loomfabric/loom/agent/vmm"
	"github.com/loomfabric/loom/fabric/api"
)

// Format is the layout of a state and its manifest; a new one makes every
// key new.
const Format = "1"

// ParkMark is the console mark of a guest agent waiting for its host: the
// template is saved on it.
const ParkMark = "LOOM-MARK waiting-host"

// Cache builds and keeps saved states.
type Cache struct {
	// Dir holds the states. Required.
	Dir string
	// QEMU and Accel are as the guests' vmm.Manager has them.
	QEMU  string
	Accel api.Accel
	// Keep bounds how many states are kept (the least recently used go
	// first). Default 4.
	Keep int
	// BootTimeout bounds the template's boot to its park. Default 5 min.
	BootTimeout time.Duration
	Log         *slog.Logger

	mu       sync.Mutex
	building map[string]*build
	sums     map[string]fileSum
}

// Template is a machine to keep a state for.
type Template struct {
	// Spec is the guests' machine: Kernel, Initrd, VCPUs, MemoryMB,
	// Cmdline and ExtraArgs count; Name, Disk and Incoming are ignored.
	Spec vmm.Spec
	// Disk, if set, makes the template's disk in dir; every guest resumed
	// must start with a disk of the same contents (a new overlay of the
	// same base). DiskID names those contents and is part of the key.
	Disk   func(ctx context.Context, dir string) (string, error)
	DiskID string
}

// State is a saved state ready to resume from.
type State struct {
	Key   string
	Saved vmm.Saved
	// Built is true when this Get built it (the caller waited a boot).
	Built bool
}

type manifest struct {
	Key          string            `json:"key"`
	Class        string            `json:"class"` // what a new key of the same machine replaces
	SHA256       string            `json:"sha256"`
	Size         int64             `json:"size"`
	Built        time.Time         `json:"built"`
	BuildSeconds float64           `json:"buildSeconds"`
	Inputs       map[string]string `json:"inputs"`
}

type build struct {
	done chan struct{}
	st   State
	err  error
}

type fileSum struct {
	size  int64
	mtime time.Time
	ino   uint64
	sum   string
}

func (c *Cache) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

// sum is a file's sha256, remembered while its size, mtime and inode stay.
func (c *Cache) sum(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	c.mu.Lock()
	s, ok := c.sums[path]
	c.mu.Unlock()
	if ok && s.size == fi.Size() && s.mtime.Equal(fi.ModTime()) && s.ino == ino {
		return s.sum, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }() // read only
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	s = fileSum{size: fi.Size(), mtime: fi.ModTime(), ino: ino, sum: hex.EncodeToString(h.Sum(nil))}
	c.mu.Lock()
	if c.sums == nil {
		c.sums = map[string]fileSum{}
	}
	c.sums[path] = s
	c.mu.Unlock()
	return s.sum, nil
}

// Key is the key of t's state and what went into it.
func (c *Cache) Key(t Template) (key string, inputs map[string]string, err error) {
	qemu := c.QEMU
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	if qemu, err = exec.LookPath(qemu); err != nil {
		return "", nil, err
	}
	inputs = map[string]string{"format": Format, "accel": c.Accel.String(), "disk": t.DiskID}
	for k, p := range map[string]string{"kernel": t.Spec.Kernel, "initrd": t.Spec.Initrd, "qemu": qemu} {
		if inputs[k], err = c.sum(p); err != nil {
			return "", nil, fmt.Errorf("snapshot key: %s: %w", k, err)
		}
	}
	inputs["machine"] = strings.Join((&vmm.Manager{Dir: "/", Accel: c.Accel}).Args(normal(t)), " ")
	b, _ := json.Marshal(inputs) // a map of strings: sorted keys, no error
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:10]), inputs, nil
}

// normal is t's spec as the key sees it: no names or paths of its own.
func normal(t Template) vmm.Spec {
	s := t.Spec
	s.Name, s.Kernel, s.Initrd, s.Incoming = "template", "kernel", "initrd", nil
	s.Disk = ""
	if t.Disk != nil {
		s.Disk = "disk.qcow2"
	}
	return s
}

// class is what a machine's states have in common across keys: a state of
// a new key for the same class makes the old one stale.
func class(t Template) string {
	return fmt.Sprintf("vcpus=%d memory=%d disk=%v", max(t.Spec.VCPUs, 1), t.Spec.MemoryMB, t.Disk != nil)
}

// Get returns the state for t, building it first when there is none: one
// build per key at a time, other callers wait for it.
func (c *Cache) Get(ctx context.Context, t Template) (State, error) {
	key, inputs, err := c.Key(t)
	if err != nil {
		return State{}, err
	}
	if st, err := c.load(key); err == nil {
		return st, nil
	}
	c.mu.Lock()
	if c.building == nil {
		c.building = map[string]*build{}
	}
	b, ok := c.building[key]
	if !ok {
		b = &build{done: make(chan struct{})}
		c.building[key] = b
		go func() {
			// Not the caller's context: other callers wait for this build.
			bctx, cancel := context.WithTimeout(context.Background(), c.bootTimeout()+2*time.Minute)
			b.st, b.err = c.build(bctx, key, inputs, t)
			cancel()
			c.mu.Lock()
			delete(c.building, key)
			c.mu.Unlock()
			close(b.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-ctx.Done():
		return State{}, ctx.Err()
	case <-b.done:
		return b.st, b.err
	}
}

func (c *Cache) bootTimeout() time.Duration {
	if c.BootTimeout > 0 {
		return c.BootTimeout
	}
	return 5 * time.Minute
}

// load returns the kept state of key, marking it used.
func (c *Cache) load(key string) (State, error) {
	dir := filepath.Join(c.Dir, key)
	m, err := readManifest(dir)
	if err != nil {
		return State{}, err
	}
	path := filepath.Join(dir, "state")
	fi, err := os.Stat(path)
	if err != nil {
		return State{}, err
	}
	if fi.Size() != m.Size || m.Key != key {
		return State{}, fmt.Errorf("snapshot %s: state of %d bytes, manifest says %d", key, fi.Size(), m.Size)
	}
	now := time.Now()
	_ = os.Chtimes(filepath.Join(dir, "manifest.json"), now, now) // the LRU's clock; a miss only makes pruning less exact
	return State{Key: key, Saved: vmm.Saved{Path: path, SHA256: m.SHA256, Size: m.Size}}, nil
}

func readManifest(dir string) (manifest, error) {
	var m manifest
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	return m, err
}

// build boots the template, waits for its guest agent's park and saves it.
func (c *Cache) build(ctx context.Context, key string, inputs map[string]string, t Template) (State, error) {
	t0 := time.Now()
	// Short: the template's sockets live under it (108 bytes at most).
	work := filepath.Join(c.Dir, key[:8]+".b")
	if err := os.RemoveAll(work); err != nil {
		return State{}, err
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return State{}, err
	}
	defer func() { _ = os.RemoveAll(work) }() // renamed away on success
	c.log().Info("building a guest snapshot", "key", key, "class", class(t))
	spec := t.Spec
	spec.Name, spec.Incoming = "t", nil
	spec.Disk = ""
	if t.Disk != nil {
		disk, err := t.Disk(ctx, work)
		if err != nil {
			return State{}, fmt.Errorf("snapshot %s: the template's disk: %w", key, err)
		}
		spec.Disk = disk
	}
	mgr := &vmm.Manager{Dir: work, QEMU: c.QEMU, Accel: c.Accel, Log: c.Log}
	v, err := mgr.Start(ctx, spec)
	if err != nil {
		return State{}, fmt.Errorf("snapshot %s: %w", key, err)
	}
	defer v.Kill()
	console := filepath.Join(v.Dir, "console.log")
	if err := waitMark(ctx, v, console, c.bootTimeout()); err != nil {
		return State{}, fmt.Errorf("snapshot %s: %w", key, err)
	}
	saved, err := v.Save(ctx, filepath.Join(work, "state"))
	if err != nil {
		return State{}, fmt.Errorf("snapshot %s: %w", key, err)
	}
	v.Kill()
	m := manifest{Key: key, Class: class(t), SHA256: saved.SHA256, Size: saved.Size, Built: time.Now().UTC(), BuildSeconds: time.Since(t0).Seconds(), Inputs: inputs}
	b, _ := json.MarshalIndent(m, "", "  ") // plain data
	if err := atomicfile.Write(filepath.Join(work, "manifest.json"), b, 0o600); err != nil {
		return State{}, err
	}
	// Only the state and its manifest are kept: the template's disk and
	// guest directory go with the work directory's leftovers.
	final := filepath.Join(c.Dir, key)
	if err := os.RemoveAll(final); err != nil {
		return State{}, err
	}
	if err := os.Mkdir(final, 0o700); err != nil {
		return State{}, err
	}
	for _, f := range []string{"state", "manifest.json"} {
		if err := os.Rename(filepath.Join(work, f), filepath.Join(final, f)); err != nil {
			return State{}, err
		}
	}
	_ = os.Rename(console, filepath.Join(final, "template-console.log")) // for a reader's curiosity only
	c.log().Info("guest snapshot built", "key", key, "bytes", saved.Size, "seconds", strconv.FormatFloat(m.BuildSeconds, 'f', 2, 64))
	c.prune(key, m.Class)
	saved.Path = filepath.Join(final, "state")
	return State{Key: key, Saved: saved, Built: true}, nil
}

// waitMark waits for the template's guest agent to park.
func waitMark(ctx context.Context, v *vmm.VM, console string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(console)
		if strings.Contains(string(b), ParkMark) {
			return nil
		}
		if !v.Alive() {
			return fmt.Errorf("the template's QEMU exited before its guest agent waited for its host (console: %s)", tail(b))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the template's guest agent did not wait for its host within %v (console: %s)", timeout, tail(b))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], " | ")
}

// prune removes the states key replaces (same class) and, beyond Keep,
// the least recently used.
func (c *Cache) prune(key, cls string) {
	ents, err := os.ReadDir(c.Dir)
	if err != nil {
		return
	}
	type kept struct {
		key  string
		used time.Time
	}
	var others []kept
	for _, e := range ents {
		if !e.IsDir() || e.Name() == key || strings.Contains(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(c.Dir, e.Name())
		m, err := readManifest(dir)
		if err != nil || m.Class == cls {
			c.log().Info("guest snapshot removed: stale", "key", e.Name(), "for", key)
			_ = os.RemoveAll(dir) // a leftover costs disk space only
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, "manifest.json"))
		if err != nil {
			continue
		}
		others = append(others, kept{e.Name(), fi.ModTime()})
	}
	keep := c.Keep
	if keep <= 0 {
		keep = 4
	}
	sort.Slice(others, func(i, j int) bool { return others[i].used.After(others[j].used) })
	for i := keep - 1; i >= 0 && i < len(others); i++ {
		c.log().Info("guest snapshot removed: least recently used", "key", others[i].key)
		_ = os.RemoveAll(filepath.Join(c.Dir, others[i].key))
	}
}

// Discard removes key's state (it failed to restore): the next Get builds
// it again.
func (c *Cache) Discard(key string) error {
	if key == "" || strings.ContainsAny(key, "./") {
		return errors.New("snapshot: bad key")
	}
	return os.RemoveAll(filepath.Join(c.Dir, key))
}
