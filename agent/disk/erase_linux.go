package disk

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/loomfabric/loom/fabric/api"
)

// Erase wipes a whole disk (open read-write as f; name is its kernel name,
// e.g. "vda" or "nvme0n1") the way mode says, and returns what was done in
// words for the node's record:
//   - signatures: the first and last MiB (partition tables, RAID and
//     filesystem signatures; the data stays);
//   - discard: BLKDISCARD over the disk, then the signatures (what reads
//     back from discarded blocks is up to the drive);
//   - zero: BLKZEROOUT over the disk (the kernel uses the drive's write
//     zeroes command where it has one, else writes zeroes);
//   - secure: an NVMe Format NVM with user data erase (SES=1), or an ATA
//     SECURITY ERASE UNIT (enhanced where offered) on a SATA drive; a drive
//     that offers neither, or whose security is frozen, fails with an error
//     that says so;
//   - strongest: secure where the drive offers it, else zero (and the
//     reason secure was not possible is in the record).
func Erase(f *os.File, name string, size uint64, mode string) (string, error) {
	switch mode {
	case "", api.WipeSignatures:
		if err := Wipe(f, size); err != nil {
			return "", err
		}
		return name + ": signatures (first and last MiB)", nil
	case api.WipeDiscard:
		if err := blkRange(f, unix.BLKDISCARD, size); err != nil {
			return "", fmt.Errorf("discard %s: %w", name, err)
		}
		if err := Wipe(f, size); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s: discarded %s, signatures zeroed", name, sizeText(size)), nil
	case api.WipeZero:
		start := time.Now()
		if err := blkRange(f, unix.BLKZEROOUT, size); err != nil {
			return "", fmt.Errorf("zero %s: %w", name, err)
		}
		return fmt.Sprintf("%s: zeroed %s in %.1fs", name, sizeText(size), time.Since(start).Seconds()), nil
	case api.WipeSecure:
		return secureErase(f, name)
	case api.WipeStrongest:
		if isNVMe(name) || isSCSI(name) {
			done, err := secureErase(f, name)
			if err == nil {
				return done, nil
			}
			zeroed, zerr := Erase(f, name, size, api.WipeZero)
			if zerr != nil {
				return "", errors.Join(err, zerr)
			}
			return fmt.Sprintf("%s (secure erase failed: %v)", zeroed, err), nil
		}
		return Erase(f, name, size, api.WipeZero)
	}
	return "", fmt.Errorf("wipe mode %q: want %s", mode, strings.Join(api.WipeModes, ", "))
}

func isNVMe(name string) bool { return strings.HasPrefix(name, "nvme") }

// isSCSI: a disk the SCSI layer drives (sdX), which is where SATA drives
// appear, behind libata or a SAS HBA.
func isSCSI(name string) bool { return strings.HasPrefix(name, "sd") }

// blkRange runs a BLKDISCARD or BLKZEROOUT ioctl over [0, size).
func blkRange(f *os.File, req uint, size uint64) error {
	r := [2]uint64{0, size}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(unsafe.Pointer(&r)))
	switch {
	case errno == unix.EOPNOTSUPP:
		return errors.New("the device does not support it")
	case errno != 0:
		return errno
	}
	return nil
}

// nvmePassthru is the kernel's struct nvme_passthru_cmd (linux/nvme_ioctl.h).
type nvmePassthru struct {
	Opcode      uint8
	Flags       uint8
	Rsvd1       uint16
	NSID        uint32
	CDW2, CDW3  uint32
	Metadata    uint64
	Addr        uint64
	MetadataLen uint32
	DataLen     uint32
	CDW10       uint32
	CDW11       uint32
	CDW12       uint32
	CDW13       uint32
	CDW14       uint32
	CDW15       uint32
	TimeoutMS   uint32
	Result      uint32
}

const (
	nvmeIoctlID       = 0x4e40     // _IO('N', 0x40): the namespace id of a block device
	nvmeIoctlAdminCmd = 0xc0484e41 // _IOWR('N', 0x41, struct nvme_passthru_cmd)
	nvmeFormatNVM     = 0x80
	nvmeIdentify      = 0x06   // with cdw10 CNS 0: Identify Namespace
	nvmeSESUserData   = 1 << 9 // Format NVM cdw10: secure erase setting 1, user data erase
)

// secureErase erases with the drive's own command: NVMe format or ATA
// security erase.
func secureErase(f *os.File, name string) (string, error) {
	switch {
	case isNVMe(name):
		return nvmeSecureErase(f, name)
	case isSCSI(name):
		return ataSecureErase(sgDevice{f}, name)
	}
	return "", fmt.Errorf("secure erase: %s is neither an NVMe nor a SCSI/SATA disk; it has no secure erase command Loom can send (use zero)", name)
}

// nvmeSecureErase formats an NVMe namespace with user data erase, keeping
// its current LBA format.
func nvmeSecureErase(f *os.File, name string) (string, error) {
	nsid, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlID, 0)
	if errno != 0 {
		return "", fmt.Errorf("secure erase %s: namespace id: %w", name, errno)
	}
	lbaf, err := currentLBAF(f, uint32(nsid))
	if err != nil {
		return "", fmt.Errorf("secure erase %s: %w", name, err)
	}
	cmd := nvmePassthru{Opcode: nvmeFormatNVM, NSID: uint32(nsid), CDW10: nvmeSESUserData | lbaf&0x0f | (lbaf>>4&0x03)<<12, TimeoutMS: 30 * 60 * 1000}
	start := time.Now()
	_, _, errno = unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(&cmd)))
	if errno != 0 {
		return "", fmt.Errorf("secure erase %s: NVMe Format NVM: %w", name, errno)
	}
	_ = Reread(f) // the namespace may look different to the kernel now
	return fmt.Sprintf("%s: NVMe format with user data erase (namespace %d) in %.1fs", name, nsid, time.Since(start).Seconds()), nil
}

// currentLBAF reads the namespace's LBA format index (Identify Namespace,
// FLBAS), which the format keeps.
func currentLBAF(f *os.File, nsid uint32) (uint32, error) {
	buf := make([]byte, 4096)
	cmd := nvmePassthru{Opcode: nvmeIdentify, NSID: nsid, Addr: uint64(uintptr(unsafe.Pointer(&buf[0]))), DataLen: uint32(len(buf)), TimeoutMS: 10000}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), nvmeIoctlAdminCmd, uintptr(unsafe.Pointer(&cmd)))
	if errno != 0 {
		return 0, fmt.Errorf("NVMe Identify Namespace: %w", errno)
	}
	runtime.KeepAlive(buf)
	flbas := uint32(buf[26])
	return flbas&0x0f | (flbas>>5&0x03)<<4, nil // index: bits 3:0, high bits 6:5
}

func sizeText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}
