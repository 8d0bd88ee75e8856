package disk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
)

// loopDisk backs a loop device with a file full of 0xAB and returns the
// device (open read-write), its kernel name and the backing file.
func loopDisk(t *testing.T, size int) (*os.File, string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	backing := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(backing, bytes.Repeat([]byte{0xab}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, filepath.Base(dev), backing
}

// TestErase runs each mode against a real block device (a loop device) and
// checks what is left on it.
func TestErase(t *testing.T) {
	const size = 8 << 20
	for _, tc := range []struct {
		mode, says string
		// zeroes: which ranges must read back as zero; the rest keeps 0xAB.
		all bool
	}{
		{api.WipeSignatures, "signatures", false},
		{api.WipeDiscard, "discarded 8.0 MiB", false}, // loop devices punch holes: reads give zeroes
		{api.WipeZero, "zeroed 8.0 MiB", true},
		{api.WipeStrongest, "zeroed 8.0 MiB", true}, // not NVMe: zeroes
	} {
		t.Run(tc.mode, func(t *testing.T) {
			f, name, backing := loopDisk(t, size)
			what, err := Erase(f, name, size, tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(what, tc.says) || !strings.HasPrefix(what, name+": ") {
				t.Errorf("Erase says %q, want it to name %s and say %q", what, name, tc.says)
			}
			f.Sync()
			got, err := os.ReadFile(backing)
			if err != nil {
				t.Fatal(err)
			}
			zero := make([]byte, 1<<20)
			if !bytes.Equal(got[:1<<20], zero) || !bytes.Equal(got[size-1<<20:], zero) {
				t.Errorf("%s: the first or last MiB is not zero", tc.mode)
			}
			middle := got[1<<20 : size-1<<20]
			switch {
			case tc.all && !bytes.Equal(middle, make([]byte, len(middle))):
				t.Errorf("%s: data is left in the middle of the disk", tc.mode)
			case tc.mode == api.WipeSignatures && !bytes.Equal(middle, bytes.Repeat([]byte{0xab}, len(middle))):
				t.Errorf("signatures: the middle of the disk changed")
			}
		})
	}
	t.Run("secure on a disk that is neither NVMe nor SATA", func(t *testing.T) {
		f, name, backing := loopDisk(t, size)
		_, err := Erase(f, name, size, api.WipeSecure)
		if err == nil || !strings.Contains(err.Error(), "is neither an NVMe nor a SCSI/SATA disk") {
			t.Errorf("secure erase of %s: %v, want a clear refusal", name, err)
		}
		if got, _ := os.ReadFile(backing); got[0] != 0xab {
			t.Errorf("a refused secure erase changed the disk")
		}
	})
	t.Run("unknown mode", func(t *testing.T) {
		f, name, _ := loopDisk(t, size)
		if _, err := Erase(f, name, size, "shred"); err == nil || !strings.Contains(err.Error(), `wipe mode "shred"`) {
			t.Errorf("unknown mode: %v", err)
		}
	})
}
