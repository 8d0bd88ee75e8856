// The read-back check: sample blocks chosen from the image's data ranges,
// their digests taken as the data streams by, and compared with what the
// disk returns after the write.
package imaging

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"fmt"
	"hash"
	"math/rand/v2"
	"slices"

	"github.com/loomfabric/loom/fabric/api"
)

// sample is a block of the data whose sha256 is taken as it streams by,
// to be compared with what the device holds after the fsync.
type sample struct {
	off, n uint64
	h      hash.Hash
	sum    []byte // set once the whole block has streamed by
}

// pickSamples chooses the read-back blocks: the first of the first range,
// the last of the last range (so a short write at either end shows), and
// the rest at random offsets, a range picked in proportion to its length.
// Offsets within a range are multiples of 4 KiB (O_DIRECT reads).
func pickSamples(m *api.Manifest, count int, size uint64) []*sample {
	if len(m.Ranges) == 0 || m.DataBytes == 0 {
		return nil
	}
	size &^= 4095
	block := func(r api.Range, want uint64) *sample {
		at := min(want, r.Length-min(size, r.Length)) &^ 4095
		return &sample{off: r.Offset + at, n: min(size, r.Length-at)}
	}
	first, last := m.Ranges[0], m.Ranges[len(m.Ranges)-1]
	tail := block(last, last.Length)
	tail.n = last.Length - (tail.off - last.Offset) // up to 4 KiB past size: the last block ends where the data does
	out := []*sample{block(first, 0), tail}
	for range count - 2 {
		x := rand.Uint64N(m.DataBytes)
		for _, r := range m.Ranges {
			if x < r.Length {
				out = append(out, block(r, x))
				break
			}
			x -= r.Length
		}
	}
	slices.SortFunc(out, func(a, b *sample) int { return cmp.Compare(a.off, b.off) })
	return slices.CompactFunc(out, func(a, b *sample) bool { return a.off == b.off })
}

// digestSamples feeds the samples that c overlaps. A chunk that holds a
// sample's first byte starts its digest afresh: a restarted stream sends
// a range again from its start.
func (w *Writer) digestSamples(c chunk) {
	lo, hi := uint64(c.off), uint64(c.off)+uint64(len(c.buf))
	for _, s := range w.samples {
		if s.off >= hi {
			break
		}
		if s.off+s.n <= lo {
			continue
		}
		a, b := max(s.off, lo), min(s.off+s.n, hi)
		if a == s.off {
			s.h, s.sum = sha256.New(), nil
		}
		if s.h == nil {
			continue // its start went by in a stream since abandoned
		}
		s.h.Write(c.buf[a-lo : b-lo])
		if b == s.off+s.n {
			s.sum = s.h.Sum(nil)
		}
	}
}

// readBack drops the cached pages and reads the sample blocks from the
// device: each must hash to what streamed by.
func (w *Writer) readBack() error {
	if len(w.samples) == 0 {
		return nil
	}
	dropCache(w.Target)
	buf := alignedBuf(int(w.SampleSize) + 4096)
	for _, s := range w.samples {
		if s.sum == nil {
			return fmt.Errorf("read-back: the block at %d (%d bytes) never streamed by whole", s.off, s.n)
		}
		if _, err := w.Target.ReadAt(buf[:s.n], int64(s.off)); err != nil {
			return fmt.Errorf("read-back at %d: %w", s.off, err)
		}
		if got := sha256.Sum256(buf[:s.n]); !bytes.Equal(got[:], s.sum) {
			return fmt.Errorf("%w: read-back of %d bytes at %d: the device holds sha256 %x, %x was written", ErrVerify, s.n, s.off, got, s.sum)
		}
	}
	return nil
}
