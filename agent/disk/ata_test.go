package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeATA is a drive with the ATA security feature set, as ACS-3 has it:
// a password turns security on, ERASE PREPARE then ERASE UNIT with that
// password erases and turns it off again.
type fakeATA struct {
	identify    [256]uint16
	password    []byte
	prepared    bool
	erased      bool
	enhanced    bool
	refuse      uint8 // a command that fails
	lastTimeout time.Duration
	commands    []uint8
}

func newFakeATA(w128 uint16) *fakeATA {
	d := &fakeATA{}
	d.identify[82] = 1 << 1
	d.identify[128] = w128
	d.identify[89] = 3           // 6 minutes
	d.identify[90] = 0x8000 | 10 // extended format: 20 minutes
	return d
}

func (d *fakeATA) ata(cmd, _, _ uint8, dir int, buf []byte, timeout time.Duration) error {
	d.commands = append(d.commands, cmd)
	d.lastTimeout = timeout
	if cmd == d.refuse {
		return errors.New("the drive refused it (ATA status 0x51, error 0x4)")
	}
	switch cmd {
	case ataIdentify:
		for i, w := range d.identify {
			binary.LittleEndian.PutUint16(buf[2*i:], w)
		}
	case ataSecuritySetPassword:
		d.password = bytes.TrimRight(buf[2:34], "\x00")
		d.identify[128] |= 1 << 1
	case ataSecurityErasePrep:
		d.prepared = true
	case ataSecurityEraseUnit:
		if !d.prepared || !bytes.Equal(bytes.TrimRight(buf[2:34], "\x00"), d.password) {
			return errors.New("the drive refused it (ATA status 0x51, error 0x4)")
		}
		d.erased, d.enhanced = true, binary.LittleEndian.Uint16(buf)&(1<<1) != 0
		d.password, d.prepared = nil, false
		d.identify[128] &^= 1 << 1
	}
	return nil
}

func TestATASecureErase(t *testing.T) {
	const supported, enabled, locked, frozen, enhanced = 1, 1 << 1, 1 << 2, 1 << 3, 1 << 5
	t.Run("enhanced erase where offered", func(t *testing.T) {
		d := newFakeATA(supported | enhanced)
		what, err := ataSecureErase(d, "sda")
		if err != nil {
			t.Fatal(err)
		}
		if !d.erased || !d.enhanced || !strings.Contains(what, "sda: ATA enhanced security erase") {
			t.Errorf("erased=%v enhanced=%v, says %q", d.erased, d.enhanced, what)
		}
		if d.identify[128]&enabled != 0 {
			t.Errorf("security left on after the erase")
		}
		if d.lastTimeout != 2*20*time.Minute+10*time.Minute {
			t.Errorf("erase timeout %v, want twice the drive's 20-minute estimate plus 10m", d.lastTimeout)
		}
	})
	t.Run("normal erase", func(t *testing.T) {
		d := newFakeATA(supported)
		what, err := ataSecureErase(d, "sdb")
		if err != nil || !d.erased || d.enhanced || !strings.Contains(what, "normal") {
			t.Errorf("erased=%v enhanced=%v, %q, %v", d.erased, d.enhanced, what, err)
		}
		if d.lastTimeout != 2*6*time.Minute+10*time.Minute {
			t.Errorf("erase timeout %v, want twice the drive's 6-minute estimate plus 10m", d.lastTimeout)
		}
	})
	for name, c := range map[string]struct {
		w128 uint16
		says string
	}{
		"not offered":      {0, "does not offer ATA security erase"},
		"frozen":           {supported | frozen, "frozen"},
		"locked":           {supported | enabled | locked, "locked"},
		"password already": {supported | enabled, "already has a security password"},
	} {
		t.Run(name, func(t *testing.T) {
			d := newFakeATA(c.w128)
			if c.w128 == 0 {
				d.identify[82] = 0
			}
			_, err := ataSecureErase(d, "sda")
			if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "sda") {
				t.Errorf("error %v, want it to name sda and say %q", err, c.says)
			}
			if len(d.commands) != 1 || d.erased {
				t.Errorf("commands %x sent after IDENTIFY said no", d.commands)
			}
		})
	}
	t.Run("erase refused", func(t *testing.T) {
		d := newFakeATA(supported)
		d.refuse = ataSecurityEraseUnit
		_, err := ataSecureErase(d, "sda")
		if err == nil || !strings.Contains(err.Error(), "SECURITY ERASE UNIT") || !strings.Contains(err.Error(), string(ataPassword)) {
			t.Errorf("error %v, want SECURITY ERASE UNIT named with the password left set", err)
		}
	})
	t.Run("no ATA behind the device", func(t *testing.T) {
		d := newFakeATA(supported)
		d.refuse = ataIdentify
		if _, err := ataSecureErase(d, "sdc"); err == nil || !strings.Contains(err.Error(), "not an ATA drive") {
			t.Errorf("error %v", err)
		}
	})
}

func TestParseIdentifyEraseTimes(t *testing.T) {
	id := make([]byte, 512)
	for _, c := range []struct {
		w    uint16
		want time.Duration
	}{{0, 0}, {5, 10 * time.Minute}, {0xff, 0}, {0x8000 | 300, 600 * time.Minute}, {0xffff, 0}} {
		binary.LittleEndian.PutUint16(id[2*89:], c.w)
		if got := parseIdentify(id).normalTime; got != c.want {
			t.Errorf("word 89 = %#x: %v, want %v", c.w, got, c.want)
		}
	}
}

func TestSGResult(t *testing.T) {
	ok := sgIOHdr{Status: 2, DriverStatus: 0x08}
	// Descriptor sense with an ATA status return: status 0x50 (DRDY|DSC) is good.
	good := []byte{0x72, 0x01, 0x00, 0x1d, 0, 0, 0, 14, 0x09, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50}
	if err := sgResult(ok, good); err != nil {
		t.Errorf("good ATA status: %v", err)
	}
	bad := append([]byte(nil), good...)
	bad[11], bad[21] = 0x04, 0x51 // ABRT, ERR
	if err := sgResult(ok, bad); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("ATA error status: %v", err)
	}
	illegal := []byte{0x70, 0, 0x05, 0, 0, 0, 0, 10}
	if err := sgResult(sgIOHdr{Status: 2}, illegal); err == nil || !strings.Contains(err.Error(), "ILLEGAL REQUEST") {
		t.Errorf("illegal request: %v", err)
	}
	if err := sgResult(sgIOHdr{HostStatus: 1}, nil); err == nil {
		t.Errorf("host error passed")
	}
	if err := sgResult(sgIOHdr{}, nil); err != nil {
		t.Errorf("clean status: %v", err)
	}
}
