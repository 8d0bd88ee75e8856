// Package disk prepares a disk for the host: it wipes old signatures,
// writes a GPT (protective MBR, primary and backup headers and entry
// arrays, CRC32s as UEFI 2.x specifies), asks the kernel to re-read it, and
// chooses the target disk by a profile's rule.
//
// The layout Loom writes (see Layout): partition 1 "loom-host" holds the
// host image (a filesystem with the host kernel and initramfs), aligned to
// 1 MiB and sized to the image rounded up to 1 MiB; partition 2
// "loom-data" fills the rest of the disk (guest disks, later).
package disk

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"unicode/utf16"
)

const (
	sectorSize  = 512
	entrySize   = 128
	numEntries  = 128
	entriesLBAs = numEntries * entrySize / sectorSize // 32
	alignment   = 1 << 20                             // 1 MiB
)

// Partition types.
var (
	// TypeLinuxFS is "Linux filesystem data" (0FC63DAF-8483-4772-8E79-3D69D8477DE4).
	TypeLinuxFS = guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
)

// Partition is one GPT entry, in bytes (Start and Size 1 MiB-aligned).
type Partition struct {
	Name  string
	Start uint64
	Size  uint64
	Type  [16]byte
	GUID  [16]byte // random if zero
}

// Layout computes Loom's two partitions for a disk of diskSize bytes and a
// host image of imageSize bytes.
func Layout(diskSize, imageSize uint64) ([]Partition, error) {
	if imageSize == 0 {
		return nil, errors.New("layout: empty host image")
	}
	hostSize := roundUp(imageSize, alignment)
	start := uint64(alignment)
	// The backup GPT takes 33 sectors at the end; keep the last MiB free.
	usableEnd := (diskSize - (1+entriesLBAs)*sectorSize) / alignment * alignment
	if diskSize < 3*alignment || start+hostSize+alignment > usableEnd {
		return nil, fmt.Errorf("layout: a %d-byte disk cannot hold a %d-byte host partition and a data partition", diskSize, hostSize)
	}
	return []Partition{
		{Name: "loom-host", Start: start, Size: hostSize, Type: TypeLinuxFS},
		{Name: "loom-data", Start: start + hostSize, Size: usableEnd - start - hostSize, Type: TypeLinuxFS},
	}, nil
}

func roundUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// guid parses a GUID in its text form into GPT's mixed-endian bytes.
func guid(s string) [16]byte {
	var g [16]byte
	var raw []byte
	for _, c := range s {
		if c == '-' {
			continue
		}
		raw = append(raw, byte(c))
	}
	var b [16]byte
	for i := range 16 {
		_, _ = fmt.Sscanf(string(raw[2*i:2*i+2]), "%02X", &b[i]) // hex checked by the caller's pattern
	}
	// First three fields little-endian.
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g
}

func randomGUID() [16]byte {
	var g [16]byte
	rand.Read(g[:])
	g[7] = g[7]&0x0f | 0x40 // version 4 (field 3 is little-endian)
	g[8] = g[8]&0x3f | 0x80
	return g
}

// WriteGPT writes a protective MBR and both GPT copies for parts onto a
// disk of diskSize bytes.
func WriteGPT(w io.WriterAt, diskSize uint64, parts []Partition) error {
	lastLBA := diskSize/sectorSize - 1
	firstUsable := uint64(2 + entriesLBAs)
	lastUsable := lastLBA - 1 - entriesLBAs
	if len(parts) > numEntries {
		return fmt.Errorf("gpt: %d partitions, at most %d", len(parts), numEntries)
	}
	entries := make([]byte, numEntries*entrySize)
	for i, p := range parts {
		first, last := p.Start/sectorSize, (p.Start+p.Size)/sectorSize-1
		if p.Start%sectorSize != 0 || p.Size%sectorSize != 0 || first < firstUsable || last > lastUsable || p.Size == 0 {
			return fmt.Errorf("gpt: partition %d (%s) %d+%d lies outside the usable area", i+1, p.Name, p.Start, p.Size)
		}
		e := entries[i*entrySize:]
		copy(e[0:16], p.Type[:])
		g := p.GUID
		if g == [16]byte{} {
			g = randomGUID()
		}
		copy(e[16:32], g[:])
		binary.LittleEndian.PutUint64(e[32:], first)
		binary.LittleEndian.PutUint64(e[40:], last)
		name := utf16.Encode([]rune(p.Name))
		if len(name) > 36 {
			return fmt.Errorf("gpt: partition name %q longer than 36 UTF-16 units", p.Name)
		}
		for j, u := range name {
			binary.LittleEndian.PutUint16(e[56+2*j:], u)
		}
	}
	entriesCRC := crc32.ChecksumIEEE(entries)
	diskGUID := randomGUID()
	header := func(myLBA, altLBA, entriesLBA uint64) []byte {
		h := make([]byte, sectorSize)
		copy(h[0:8], "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], myLBA)
		binary.LittleEndian.PutUint64(h[32:], altLBA)
		binary.LittleEndian.PutUint64(h[40:], firstUsable)
		binary.LittleEndian.PutUint64(h[48:], lastUsable)
		copy(h[56:72], diskGUID[:])
		binary.LittleEndian.PutUint64(h[72:], entriesLBA)
		binary.LittleEndian.PutUint32(h[80:], numEntries)
		binary.LittleEndian.PutUint32(h[84:], entrySize)
		binary.LittleEndian.PutUint32(h[88:], entriesCRC)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	// Protective MBR: one partition of type 0xEE covering the disk.
	mbr := make([]byte, sectorSize)
	pe := mbr[446:]
	pe[1], pe[2], pe[3] = 0x00, 0x02, 0x00 // CHS of LBA 1
	pe[4] = 0xEE
	pe[5], pe[6], pe[7] = 0xFF, 0xFF, 0xFF
	binary.LittleEndian.PutUint32(pe[8:], 1)
	n := min(lastLBA, 0xFFFFFFFF)
	binary.LittleEndian.PutUint32(pe[12:], uint32(n))
	mbr[510], mbr[511] = 0x55, 0xAA

	writes := []struct {
		lba  uint64
		data []byte
	}{
		{0, mbr},
		{1, header(1, lastLBA, 2)},
		{2, entries},
		{lastLBA - entriesLBAs, entries},
		{lastLBA, header(lastLBA, 1, lastLBA-entriesLBAs)},
	}
	for _, wr := range writes {
		if _, err := w.WriteAt(wr.data, int64(wr.lba*sectorSize)); err != nil {
			return fmt.Errorf("gpt: writing LBA %d: %w", wr.lba, err)
		}
	}
	return nil
}

// Wipe zeroes the first and last MiB of a disk: old partition tables
// (primary and backup GPT), filesystem and RAID signatures.
func Wipe(w io.WriterAt, diskSize uint64) error {
	zero := bytes.Repeat([]byte{0}, alignment)
	n := min(uint64(alignment), diskSize)
	if _, err := w.WriteAt(zero[:n], 0); err != nil {
		return fmt.Errorf("wiping the start of the disk: %w", err)
	}
	if diskSize > alignment {
		if _, err := w.WriteAt(zero[:n], int64(diskSize-n)); err != nil {
			return fmt.Errorf("wiping the end of the disk: %w", err)
		}
	}
	return nil
}
