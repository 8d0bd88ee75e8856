// Package seed is what a machine is told at boot besides its kernel
// command line: the fabric's CA certificate (the only one the agent
// trusts loomd's with) and the enrollment token. They travel as a small
// cpio archive appended to the initramfs (Linux unpacks concatenated
// archives into the same root): loomd appends it to the maintenance OS's
// initramfs it serves, and the maintenance agent appends it to the host
// OS's when it hands over, so neither is on a command line that every
// process can read.
//
//	/etc/loom/ca.pem          the fabric's CA certificate
//	/etc/loom/enroll.token    the enrollment token (mode 0600)
//	/etc/loom/not-before      a time the machine's clock cannot be before
//	                          (RFC 3339): loomd's start, when its
//	                          certificate was made. A machine whose clock
//	                          is behind it (a dead CMOS battery) moves it
//	                          there, or no certificate of the fabric would
//	                          be valid yet.
package seed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// Where the seed's files are, relative to the root.
const (
	Dir       = "etc/loom"
	CAFile    = Dir + "/ca.pem"
	TokenFile = Dir + "/enroll.token"
	TimeFile  = Dir + "/not-before"
)

// Seed is what the machine is told.
type Seed struct {
	CA        []byte // PEM
	Token     string
	NotBefore time.Time // zero: none
}

// Segment is the seed as a newc cpio archive (with its trailer), to be
// appended to an initramfs at a 4-byte boundary (see Pad).
func (s Seed) Segment() ([]byte, error) {
	if len(s.CA) == 0 || s.Token == "" || strings.ContainsAny(s.Token, " \n\t") {
		return nil, errors.New("seed: want a CA certificate and a one-word token")
	}
	var b bytes.Buffer
	w := cpio.Newc.Writer(&b)
	recs := []cpio.Record{
		cpio.StaticFile(CAFile, string(s.CA), 0o644),
		cpio.StaticFile(TokenFile, s.Token+"\n", 0o600),
	}
	if !s.NotBefore.IsZero() {
		recs = append(recs, cpio.StaticFile(TimeFile, s.NotBefore.UTC().Format(time.RFC3339)+"\n", 0o644))
	}
	if err := cpio.WriteRecordsAndDirs(w, recs); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	return b.Bytes(), nil
}

// Pad is how many zero bytes go between an initramfs of size bytes and
// an appended archive (the kernel looks for the next one at a 4-byte
// boundary, and skips zeros).
func Pad(size int64) int { return int((4 - size%4) % 4) }

// Append writes base, the padding and the seed's segment to w.
func (s Seed) Append(w io.Writer, base io.Reader) error {
	seg, err := s.Segment()
	if err != nil {
		return err
	}
	n, err := io.Copy(w, base)
	if err != nil {
		return fmt.Errorf("seed: copying the initramfs: %w", err)
	}
	if _, err := w.Write(append(make([]byte, Pad(n)), seg...)); err != nil {
		return fmt.Errorf("seed: appending: %w", err)
	}
	return nil
}

// Read reads the seed under root ("/" on a machine). A missing file is
// left empty (fs.ErrNotExist is not an error): the caller says what it
// needs.
func Read(root string) (Seed, error) {
	var s Seed
	ca, err := os.ReadFile(filepath.Join(root, CAFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("seed: %w", err)
	}
	tok, err := os.ReadFile(filepath.Join(root, TokenFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("seed: %w", err)
	}
	s.CA, s.Token = ca, strings.TrimSpace(string(tok))
	nb, err := os.ReadFile(filepath.Join(root, TimeFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return s, fmt.Errorf("seed: %w", err)
	}
	if t := strings.TrimSpace(string(nb)); t != "" {
		if s.NotBefore, err = time.Parse(time.RFC3339, t); err != nil {
			return s, fmt.Errorf("seed: %s: %w", TimeFile, err)
		}
	}
	return s, nil
}
