package vmm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// A guest's state can be saved to a file and a new QEMU started from it
// (QEMU's migration, over a unix socket this package listens on or dials,
// so the stream is hashed on its way through: a state file that is not
// what was saved is refused before the guest runs a single instruction).

// execArgs runs a QMP command with arguments.
func (v *VM) execArgs(cmd string, args any) ([]byte, error) {
	b, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{cmd, args})
	if err != nil {
		return nil, err
	}
	out, err := v.mon.Run(b)
	if err != nil {
		return nil, fmt.Errorf("vmm: %s %s: %w", v.Spec.Name, cmd, err)
	}
	return out, nil
}

// migrationStatus is query-migrate's status ("active", "completed",
// "failed", …; "" before any migration) and its error description.
func (v *VM) migrationStatus() (string, string, error) {
	out, err := v.run("query-migrate")
	if err != nil {
		return "", "", err
	}
	var r struct {
		Return struct {
			Status string `json:"status"`
			Error  string `json:"error-desc"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return "", "", err
	}
	return r.Return.Status, r.Return.Error, nil
}

// waitMigration polls until the migration has completed, or fails.
func (v *VM) waitMigration(ctx context.Context, exited <-chan struct{}) error {
	for {
		st, desc, err := v.migrationStatus()
		switch {
		case err != nil:
			return err
		case st == "completed":
			return nil
		case st == "failed" || st == "cancelled":
			return fmt.Errorf("migration %s: %s", st, desc)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("QEMU exited during the migration")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Saved describes a saved state file.
type Saved struct {
	Path   string
	SHA256 string
	Size   int64
}

// Save pauses the guest and writes its whole state (memory, CPUs, devices;
// not its disk, which must be the same when the state is restored) to
// path, atomically. The guest stays paused: a template is quit after.
func (v *VM) Save(ctx context.Context, path string) (Saved, error) {
	if _, err := v.run("stop"); err != nil {
		return Saved{}, err
	}
	sock := filepath.Join(v.Dir, "migrate.sock")
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return Saved{}, fmt.Errorf("vmm: saving %s: %w", v.Spec.Name, err)
	}
	defer func() { _ = l.Close() }()
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return Saved{}, err
	}
	defer func() { _ = os.Remove(tmp) }() // gone after the rename; a leftover of a failure otherwise
	defer func() { _ = f.Close() }()      // closed after a sync below on success
	if _, err := v.execArgs("migrate", map[string]string{"uri": "unix:" + sock}); err != nil {
		return Saved{}, err
	}
	type copied struct {
		n   int64
		sum string
		err error
	}
	done := make(chan copied, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- copied{err: err}
			return
		}
		defer func() { _ = c.Close() }()
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(f, h), c)
		done <- copied{n, hex.EncodeToString(h.Sum(nil)), err}
	}()
	if err := v.waitMigration(ctx, nil); err != nil {
		_ = l.Close()
		return Saved{}, fmt.Errorf("vmm: saving %s: %w", v.Spec.Name, err)
	}
	var c copied
	select {
	case c = <-done:
	case <-time.After(30 * time.Second):
		_ = l.Close()
		return Saved{}, fmt.Errorf("vmm: saving %s: QEMU reported the migration complete but the stream did not end", v.Spec.Name)
	}
	if c.err != nil {
		return Saved{}, fmt.Errorf("vmm: saving %s: %w", v.Spec.Name, c.err)
	}
	if err := f.Sync(); err != nil {
		return Saved{}, err
	}
	if err := f.Close(); err != nil {
		return Saved{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return Saved{}, err
	}
	return Saved{Path: path, SHA256: c.sum, Size: c.n}, nil
}

// restore feeds a state file to a QEMU started with -incoming defer -S,
// checking its hash on the way, and resumes the guest only when QEMU has
// loaded all of it and the hash is the one saved.
func (v *VM) restore(ctx context.Context, from Saved, exited <-chan struct{}) error {
	f, err := os.Open(from.Path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read only
	sock := filepath.Join(v.Dir, "incoming.sock")
	_ = os.Remove(sock)
	if _, err := v.execArgs("migrate-incoming", map[string]string{"uri": "unix:" + sock}); err != nil {
		return err
	}
	var c net.Conn
	for range 100 {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("the incoming socket: %w", err)
	}
	defer func() { _ = c.Close() }()
	h := sha256.New()
	n, sendErr := io.Copy(c, io.TeeReader(f, h))
	if sendErr != nil {
		// QEMU stopped reading: most likely it refused what it read. Is
		// the file what was saved?
		m, err := io.Copy(h, f)
		if err != nil {
			return fmt.Errorf("sending the state: %w; reading it: %w", sendErr, err)
		}
		n += m
	}
	_ = c.(*net.UnixConn).CloseWrite() // QEMU reads to its end marker, not to EOF
	sum := hex.EncodeToString(h.Sum(nil))
	if sum != from.SHA256 || n != from.Size {
		return fmt.Errorf("%w: %s is %d bytes of sha256 %s, saved as %d bytes of %s", ErrCorrupt, from.Path, n, sum, from.Size, from.SHA256)
	}
	if sendErr != nil {
		return fmt.Errorf("sending the state: %w", sendErr)
	}
	if err := v.waitMigration(ctx, exited); err != nil {
		return err
	}
	_, err = v.run("cont")
	return err
}

// ErrCorrupt is a state file that is not the one saved.
var ErrCorrupt = errors.New("the saved state is corrupt")
