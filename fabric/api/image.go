package api

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Format is how an image's blob holds the disk image.
type Format string

// Image formats.
const (
	FormatRaw     Format = "raw"      // the blob is the disk image itself
	FormatRawZstd Format = "raw+zstd" // the blob is the disk image compressed with zstd
)

// Manifest describes a stored image: what to write where, and how to
// check it. Ranges are the data ranges of the logical (uncompressed) image;
// everything between them is a hole that must read as zero on the target.
// Each range carries the sha256 of its bytes; MapDigest covers the format,
// size, block size and every range, so a manifest cannot be altered without
// changing it.
type Manifest struct {
	Name string `json:"name"`
	// Digest is the sha256 of the stored blob (content address).
	Digest    string `json:"digest"`
	Format    Format `json:"format"`
	Size      uint64 `json:"size"`     // logical size in bytes
	BlobSize  uint64 `json:"blobSize"` // stored size in bytes
	BlockSize uint32 `json:"blockSize"`
	// DataBytes is the sum of the ranges' lengths (what must be written).
	DataBytes uint64  `json:"dataBytes"`
	Ranges    []Range `json:"ranges,omitempty"`
	MapDigest string  `json:"mapDigest"`
}

// Range is one run of data blocks.
type Range struct {
	Offset uint64 `json:"offset"`
	Length uint64 `json:"length"`
	SHA256 string `json:"sha256"`
}

// SumRanges is the sum of the ranges' lengths.
func (m *Manifest) SumRanges() uint64 {
	var n uint64
	for _, r := range m.Ranges {
		n += r.Length
	}
	return n
}

// ComputeMapDigest returns the digest over the block map.
func (m *Manifest) ComputeMapDigest() string {
	h := sha256.New()
	fmt.Fprintf(h, "loom-manifest-v1\n%s\n%d\n%d\n", m.Format, m.Size, m.BlockSize)
	for _, r := range m.Ranges {
		fmt.Fprintf(h, "%d %d %s\n", r.Offset, r.Length, r.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Validate checks a manifest's consistency: format, sorted non-overlapping
// block-aligned ranges inside the image, well-formed digests, MapDigest.
func (m *Manifest) Validate() error {
	if m.Format != FormatRaw && m.Format != FormatRawZstd {
		return fmt.Errorf("manifest %s: format %q: want %q or %q", m.Name, m.Format, FormatRaw, FormatRawZstd)
	}
	if m.BlockSize == 0 || m.BlockSize&(m.BlockSize-1) != 0 {
		return fmt.Errorf("manifest %s: blockSize %d is not a power of two", m.Name, m.BlockSize)
	}
	if !isHexDigest(m.Digest) {
		return fmt.Errorf("manifest %s: digest %q is not a sha256", m.Name, m.Digest)
	}
	var end uint64
	for i, r := range m.Ranges {
		switch {
		case r.Length == 0:
			return fmt.Errorf("manifest %s: ranges[%d] is empty", m.Name, i)
		case r.Offset%uint64(m.BlockSize) != 0:
			return fmt.Errorf("manifest %s: ranges[%d] offset %d is not block-aligned", m.Name, i, r.Offset)
		case i > 0 && r.Offset < end:
			return fmt.Errorf("manifest %s: ranges[%d] at %d overlaps or precedes the previous range (ends %d)", m.Name, i, r.Offset, end)
		case r.Offset+r.Length < r.Offset || r.Offset+r.Length > m.Size:
			return fmt.Errorf("manifest %s: ranges[%d] %d+%d runs past the image size %d", m.Name, i, r.Offset, r.Length, m.Size)
		case !isHexDigest(r.SHA256):
			return fmt.Errorf("manifest %s: ranges[%d] sha256 %q is malformed", m.Name, i, r.SHA256)
		}
		end = r.Offset + r.Length
	}
	if m.DataBytes != m.SumRanges() {
		return fmt.Errorf("manifest %s: dataBytes %d, but the ranges hold %d", m.Name, m.DataBytes, m.SumRanges())
	}
	if got := m.ComputeMapDigest(); got != m.MapDigest {
		return fmt.Errorf("manifest %s: mapDigest %q does not match its block map (%s)", m.Name, m.MapDigest, got)
	}
	return nil
}

func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// SortRanges orders ranges by offset.
func SortRanges(rs []Range) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
}
