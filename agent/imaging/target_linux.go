package imaging

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// targetSize is the size of a block device or file.
func targetSize(t Target) (uint64, error) {
	st, err := t.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return uint64(max(st.Size(), 0)), nil
	}
	var n uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, t.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&n))); e != 0 {
		return 0, fmt.Errorf("BLKGETSIZE64: %w", e)
	}
	return n, nil
}

// zeroRange makes [off, off+n) read as zero: BLKZEROOUT on a block device,
// a punched hole in a file, plain zero writes where neither works.
func zeroRange(t Target, off, n uint64) error {
	if n == 0 {
		return nil
	}
	st, err := t.Stat()
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeDevice != 0 {
		r := [2]uint64{off, n}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, t.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0]))); e == 0 {
			return nil
		}
	} else {
		if off >= uint64(st.Size()) {
			return nil // past the end of a file: reads as zero already
		}
		if err := unix.Fallocate(int(t.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)); err == nil {
			return nil
		}
	}
	zero := alignedBuf(1 << 20)
	for n > 0 {
		k := min(n, uint64(len(zero)))
		if _, err := t.WriteAt(zero[:k], int64(off)); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}

// dropCache asks the kernel to forget cached pages so a read-back reads
// the device.
func dropCache(t Target) {
	_ = unix.Fadvise(int(t.Fd()), 0, 0, unix.FADV_DONTNEED) // advice only
	st, err := t.Stat()
	if err == nil && st.Mode()&os.ModeDevice != 0 {
		_, _, _ = unix.Syscall(unix.SYS_IOCTL, t.Fd(), unix.BLKFLSBUF, 0) // best effort: the next read goes to the disk either way, O_DIRECT
	}
}

// OpenTarget opens a disk or file for writing an image: block devices with
// O_DIRECT (the writer's buffers are aligned), so data goes to the device
// without a second copy through the page cache.
func OpenTarget(path string) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode()&os.ModeDevice != 0 {
		if f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0); err == nil {
			return f, nil
		}
	}
	return os.OpenFile(path, os.O_RDWR, 0)
}
