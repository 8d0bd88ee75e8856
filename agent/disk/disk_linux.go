package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Reread asks the kernel to re-read the partition table of an open disk.
func Reread(f *os.File) error {
	var err error
	for range 10 { // EBUSY right after writing happens; retry briefly
		if err = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("re-reading the partition table: %w", err)
}

// PartitionDevice is the device of partition n of disk name ("vda" → vda1,
// "nvme0n1" → nvme0n1p1). It waits for the node to appear.
func PartitionDevice(name string, n int, wait time.Duration) (string, error) {
	sep := ""
	if last := name[len(name)-1]; last >= '0' && last <= '9' {
		sep = "p"
	}
	dev := fmt.Sprintf("/dev/%s%s%d", name, sep, n)
	deadline := time.Now().Add(wait)
	for {
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not appear within %v", dev, wait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FindPartition finds the block device of the GPT partition named name
// (from sysfs uevent PARTNAME).
func FindPartition(name string) (string, error) {
	ents, _ := filepath.Glob("/sys/class/block/*/uevent")
	for _, u := range ents {
		b, err := os.ReadFile(u)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line == "PARTNAME="+name {
				return "/dev/" + filepath.Base(filepath.Dir(u)), nil
			}
		}
	}
	return "", errors.New("no partition named " + name)
}
