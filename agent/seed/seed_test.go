package seed

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// TestAppendAndRead: the segment appended to an initramfs unpacks (as the
// kernel would: the archives one after the other) into files Read finds.
func TestAppendAndRead(t *testing.T) {
	s := Seed{CA: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Token: "tok", NotBefore: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	var out bytes.Buffer
	if err := s.Append(&out, strings.NewReader("12345")); err != nil {
		t.Fatal(err)
	}
	b := out.Bytes()
	if !bytes.HasPrefix(b, []byte("12345\x00\x00\x00070701")) {
		t.Fatalf("appended = %q…, want the base padded to 8 bytes, then a newc archive", b[:min(len(b), 16)])
	}
	root := t.TempDir()
	rr := cpio.Newc.Reader(bytes.NewReader(b[8:]))
	if err := cpio.ForEachRecord(rr, func(r cpio.Record) error {
		return cpio.CreateFileInRoot(r, root, false)
	}); err != nil {
		t.Fatal(err)
	}
	got, err := Read(root)
	if err != nil || string(got.CA) != string(s.CA) || got.Token != "tok" || !got.NotBefore.Equal(s.NotBefore) {
		t.Fatalf("Read = %+v %v", got, err)
	}
	if fi, err := os.Stat(filepath.Join(root, TokenFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v %v, want 0600", fi.Mode(), err)
	}
	// Nothing there: empty, no error.
	if got, err := Read(t.TempDir()); err != nil || got.Token != "" || got.CA != nil {
		t.Errorf("Read of an empty root = %+v %v", got, err)
	}
	for _, bad := range []Seed{{Token: "t"}, {CA: s.CA}, {CA: s.CA, Token: "two words"}} {
		if _, err := bad.Segment(); err == nil {
			t.Errorf("Segment(%+v) succeeded", bad)
		}
	}
}
