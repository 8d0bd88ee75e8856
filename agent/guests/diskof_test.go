package guests

import (
	"os"
	"regexp"
	"testing"
)

// diskOf finds the whole disk under a directory on a block device (a
// partition's parent), and nothing under a pseudo file system.
func TestDiskOf(t *testing.T) {
	if d := diskOf("/proc"); d != "" {
		t.Errorf("diskOf(/proc) = %q, want none", d)
	}
	wd, _ := os.Getwd()
	d := diskOf(wd)
	t.Logf("disk under %s: %q", wd, d)
	if d != "" && !regexp.MustCompile(`^\d+:\d+$`).MatchString(d) {
		t.Errorf("diskOf = %q, want MAJ:MIN", d)
	}
	if d != "" {
		if _, err := os.Stat("/sys/dev/block/" + d + "/partition"); err == nil {
			t.Errorf("diskOf = %s, a partition; io.max wants the disk", d)
		}
	}
}
