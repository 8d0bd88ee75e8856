package disk

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLayout(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name        string
		disk, image uint64
		want        []Partition
		wantErr     bool
	}{
		{
			name: "8 GiB disk, 64 MiB image",
			disk: 8 << 30, image: 64 * mib,
			want: []Partition{
				{Name: "loom-host", Start: mib, Size: 64 * mib, Type: TypeLinuxFS},
				{Name: "loom-data", Start: 65 * mib, Size: (8<<30 - mib) - 65*mib, Type: TypeLinuxFS},
			},
		},
		{
			name: "image size rounded up to a MiB",
			disk: 1 << 30, image: 10*mib + 1,
			want: []Partition{
				{Name: "loom-host", Start: mib, Size: 11 * mib, Type: TypeLinuxFS},
				{Name: "loom-data", Start: 12 * mib, Size: (1<<30 - mib) - 12*mib, Type: TypeLinuxFS},
			},
		},
		{name: "image larger than the disk", disk: 64 * mib, image: 64 * mib, wantErr: true},
		{name: "empty image", disk: 1 << 30, image: 0, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Layout(tc.disk, tc.image)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Layout(%d, %d) error = %v, want error %v", tc.disk, tc.image, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Layout(%d, %d) (-want +got):\n%s", tc.disk, tc.image, diff)
			}
		})
	}
}

// TestWriteGPT writes a table and has sfdisk (util-linux) read it back.
func TestWriteGPT(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk (util-linux) not installed")
	}
	path := filepath.Join(t.TempDir(), "disk")
	f, _ := os.Create(path)
	defer f.Close()
	size := uint64(256 << 20)
	f.Truncate(int64(size))
	f.WriteAt([]byte("stale signature"), int64(size-100))
	if err := Wipe(f, size); err != nil {
		t.Fatal(err)
	}
	parts, err := Layout(size, 20<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteGPT(f, size, parts); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sfdisk", "--dump", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sfdisk --dump: %v\n%s", err, out)
	}
	dump := string(out)
	for _, want := range []string{
		"label: gpt",
		"start=        2048, size=       40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4",
		`name="loom-host"`,
		"start=       43008, size=      479232, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4",
		`name="loom-data"`,
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("sfdisk --dump lacks %q:\n%s", want, dump)
		}
	}
	// sfdisk --verify checks CRCs and the backup header.
	if out, err := exec.Command("sfdisk", "--verify", path).CombinedOutput(); err != nil || strings.Contains(string(out), "corrupt") {
		t.Errorf("sfdisk --verify: %v\n%s", err, out)
	}
}
