package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ATA security erase, over SCSI generic (SG_IO) with the SCSI/ATA
// Translation's ATA PASS-THROUGH (16) command, which libata, USB bridges
// and most SAS HBAs carry to a SATA drive:
//
//  1. IDENTIFY DEVICE: is the security feature set there (word 82 bit 1,
//     word 128 bit 0), not frozen by the firmware (word 128 bit 3), not
//     locked (bit 2); enhanced erase offered (bit 5); the drive's own
//     estimate of the erase time (words 89 and 90, in 2-minute units).
//  2. SECURITY SET PASSWORD (user password, a throwaway one): security on.
//  3. SECURITY ERASE PREPARE, then SECURITY ERASE UNIT with the same
//     password (enhanced where offered): the drive erases every user data
//     area, including remapped sectors, and turns security off again.
//
// A drive that does not offer it, or whose security the firmware froze at
// boot (most BIOSes do; a suspend/resume or hot-plug unfreezes), fails
// with an error that says which.

// ataDevice runs an ATA command with up to 512 bytes of PIO data.
type ataDevice interface {
	// ata runs command cmd with features and sector count; data is read
	// into (dir ataIn) or written from (ataOut) buf, or none (ataNone).
	ata(cmd, features, count uint8, dir int, buf []byte, timeout time.Duration) error
}

const (
	ataNone = iota
	ataIn
	ataOut
)

// ATA commands (ACS-3).
const (
	ataIdentify            = 0xec
	ataSecuritySetPassword = 0xf1
	ataSecurityErasePrep   = 0xf3
	ataSecurityEraseUnit   = 0xf4
)

// ataSecurity is what IDENTIFY DEVICE says about the security feature set.
type ataSecurity struct {
	supported, enabled, locked, frozen, enhanced bool
	normalTime, enhancedTime                     time.Duration // 0: not given
}

func parseIdentify(id []byte) ataSecurity {
	word := func(i int) uint16 { return binary.LittleEndian.Uint16(id[2*i:]) }
	w128 := word(128)
	// Words 89 and 90: bit 15 set, bits 14:0 count 2-minute units (7FFFh:
	// longer); clear, bits 7:0 do (FFh: longer); 0: not given.
	eraseTime := func(w uint16) time.Duration {
		v, most := w&0xff, uint16(0xff)
		if w&0x8000 != 0 {
			v, most = w&0x7fff, 0x7fff
		}
		if v == most {
			return 0 // longer than the field holds: no estimate
		}
		return time.Duration(v) * 2 * time.Minute
	}
	return ataSecurity{
		supported:    word(82)&(1<<1) != 0 && w128&1 != 0,
		enabled:      w128&(1<<1) != 0,
		locked:       w128&(1<<2) != 0,
		frozen:       w128&(1<<3) != 0,
		enhanced:     w128&(1<<5) != 0,
		normalTime:   eraseTime(word(89)),
		enhancedTime: eraseTime(word(90)),
	}
}

// ataPassword is the throwaway user password set for the erase.
var ataPassword = []byte("loom-erase")

// ataSecureErase erases an ATA drive with SECURITY ERASE UNIT and says
// what it did.
func ataSecureErase(dev ataDevice, name string) (string, error) {
	id := make([]byte, 512)
	if err := dev.ata(ataIdentify, 0, 1, ataIn, id, 10*time.Second); err != nil {
		return "", fmt.Errorf("secure erase %s: not an ATA drive or no ATA pass-through to it (IDENTIFY DEVICE: %v)", name, err)
	}
	sec := parseIdentify(id)
	switch {
	case !sec.supported:
		return "", fmt.Errorf("secure erase %s: the drive does not offer ATA security erase (use zero)", name)
	case sec.frozen:
		return "", fmt.Errorf("secure erase %s: the drive's security is frozen (firmware freezes it at boot; a suspend/resume or re-plugging the drive unfreezes it)", name)
	case sec.locked:
		return "", fmt.Errorf("secure erase %s: the drive is locked with a password Loom did not set", name)
	case sec.enabled:
		return "", fmt.Errorf("secure erase %s: the drive already has a security password Loom did not set", name)
	}
	block := func(control uint16) []byte {
		b := make([]byte, 512)
		binary.LittleEndian.PutUint16(b, control)
		copy(b[2:34], ataPassword)
		return b
	}
	if err := dev.ata(ataSecuritySetPassword, 0, 1, ataOut, block(0), 30*time.Second); err != nil {
		return "", fmt.Errorf("secure erase %s: SECURITY SET PASSWORD: %w", name, err)
	}
	kind, control, estimate := "normal", uint16(0), sec.normalTime
	if sec.enhanced {
		kind, control, estimate = "enhanced", 1<<1, sec.enhancedTime
	}
	// The drive answers when it is done; give it twice its own estimate,
	// and half a day where it gives none.
	timeout := 12 * time.Hour
	if estimate > 0 {
		timeout = 2*estimate + 10*time.Minute
	}
	start := time.Now()
	err := dev.ata(ataSecurityErasePrep, 0, 0, ataNone, nil, 30*time.Second)
	if err == nil {
		err = dev.ata(ataSecurityEraseUnit, 0, 1, ataOut, block(control), timeout)
	}
	if err != nil {
		return "", fmt.Errorf("secure erase %s: SECURITY ERASE UNIT (the drive may be left with security on and password %q): %w", name, ataPassword, err)
	}
	return fmt.Sprintf("%s: ATA %s security erase in %.1fs", name, kind, time.Since(start).Seconds()), nil
}

// sgDevice sends ATA commands through SG_IO on an open block device.
type sgDevice struct{ f *os.File }

// sgIOHdr is the kernel's struct sg_io_hdr (scsi/sg.h).
type sgIOHdr struct {
	InterfaceID    int32
	DxferDirection int32
	CmdLen         uint8
	MxSbLen        uint8
	IovecCount     uint16
	DxferLen       uint32
	Dxferp         uintptr
	Cmdp           uintptr
	Sbp            uintptr
	Timeout        uint32
	Flags          uint32
	PackID         int32
	UsrPtr         uintptr
	Status         uint8
	MaskedStatus   uint8
	MsgStatus      uint8
	SbLenWr        uint8
	HostStatus     uint16
	DriverStatus   uint16
	Resid          int32
	Duration       uint32
	Info           uint32
}

const (
	sgIO          = 0x2285
	sgDxferNone   = -1
	sgDxferToDev  = -2
	sgDxferFromDv = -3
)

func (d sgDevice) ata(cmd, features, count uint8, dir int, buf []byte, timeout time.Duration) error {
	// ATA PASS-THROUGH (16): protocol 3 non-data, 4 PIO data-in, 5 PIO
	// data-out; T_LENGTH in the sector count, BYT_BLOK (blocks of 512).
	var cdb [16]byte
	cdb[0] = 0x85
	sense := make([]byte, 32)
	h := sgIOHdr{InterfaceID: 'S', CmdLen: 16, MxSbLen: uint8(len(sense)), Sbp: uintptr(unsafe.Pointer(&sense[0])),
		Cmdp: uintptr(unsafe.Pointer(&cdb[0])), Timeout: uint32(min(timeout.Milliseconds(), 1<<32-1))}
	switch dir {
	case ataNone:
		cdb[1], cdb[2] = 3<<1, 1<<5 // CK_COND: sense data with the ATA registers
		h.DxferDirection = sgDxferNone
	case ataIn:
		cdb[1], cdb[2] = 4<<1, 1<<3|1<<2|2
		h.DxferDirection = sgDxferFromDv
	case ataOut:
		cdb[1], cdb[2] = 5<<1, 1<<2|2
		h.DxferDirection = sgDxferToDev
	}
	if len(buf) > 0 {
		h.DxferLen, h.Dxferp = uint32(len(buf)), uintptr(unsafe.Pointer(&buf[0]))
	}
	cdb[4], cdb[6], cdb[14] = features, count, cmd
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), sgIO, uintptr(unsafe.Pointer(&h)))
	runtime.KeepAlive(buf)
	runtime.KeepAlive(&cdb)
	runtime.KeepAlive(sense)
	if errno != 0 {
		return fmt.Errorf("SG_IO: %w", errno)
	}
	return sgResult(h, sense[:h.SbLenWr])
}

// sgResult turns an SG_IO outcome into an error. With CK_COND a good
// command also comes back with sense data (the ATA registers, descriptor
// 09h); only an ATA status with ERR or DF set, or any other check
// condition, is a failure.
func sgResult(h sgIOHdr, sense []byte) error {
	if h.HostStatus != 0 || h.DriverStatus&^0x08 != 0 { // 0x08: DRIVER_SENSE
		return fmt.Errorf("host status %#x, driver status %#x", h.HostStatus, h.DriverStatus)
	}
	if h.Status == 0 {
		return nil
	}
	if len(sense) >= 8 && sense[0]&0x7f == 0x72 { // descriptor format
		for d := sense[8:]; len(d) >= 2 && len(d) >= 2+int(d[1]); d = d[2+int(d[1]):] {
			if d[0] == 0x09 && d[1] >= 12 { // ATA status return
				errReg, status := d[3], d[13]
				if status&(1<<0|1<<5) != 0 {
					return fmt.Errorf("the drive refused it (ATA status %#x, error %#x)", status, errReg)
				}
				return nil
			}
		}
	}
	if len(sense) >= 3 {
		key := sense[1] & 0x0f
		if sense[0]&0x7f == 0x70 || sense[0]&0x7f == 0x71 {
			key = sense[2] & 0x0f
		}
		if key == 0x05 {
			return errors.New("ILLEGAL REQUEST: the device does not take ATA pass-through")
		}
		return fmt.Errorf("check condition, sense key %#x", key)
	}
	return fmt.Errorf("SCSI status %#x", h.Status)
}
