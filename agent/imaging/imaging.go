// Package imaging writes an image onto a disk or partition, verified as it
// streams.
//
// Order of work for a manifest (package api):
//
//  1. The holes (everything outside the data ranges, up to the image size)
//     are made zero by construction: BLKZEROOUT on a block device, a
//     punched hole on a regular file. They are never read, hashed or sent.
//  2. The data ranges stream from the Source: a "raw" image range by range
//     (HTTP Range requests, so only data crosses the network), a
//     "raw+zstd" image as one decompressed stream. Three stages run at
//     once — fetch (and decompress), hash, write (O_DIRECT on a block
//     device) — so hashing overlaps with I/O; buffers come from a small
//     fixed pool (memory stays flat whatever the image size). Each range's
//     sha256 must match.
//  3. A broken transfer is resumed: a raw range continues from the exact
//     byte it reached (its running hash continues too); a zstd stream is
//     reopened and the ranges already verified are skipped.
//  4. fsync, then a sampled read-back: the page cache is dropped and sample
//     blocks (the first and last of the data and Samples-2 at random
//     places between, SampleSize each) are read from the device; each
//     must hash to what the hash stage saw stream past for it. The digests
//     are taken in the hash stage as the bytes go by, so the check costs
//     the samples' bytes (4 MiB by default), not a second pass over ranges.
//
// Any mismatch, short stream or I/O error fails the write with an error that
// says what and where; the caller then makes the target unbootable.
package imaging

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/klauspost/compress/zstd"

	"github.com/loomfabric/loom/fabric/api"
)

// ErrVerify marks a verification failure (as opposed to an I/O error).
var ErrVerify = errors.New("verification failed")

// Source yields bytes of an image blob.
type Source interface {
	// Open returns the blob's bytes from off to off+n.
	Open(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// Target is where the image goes: a block device or a file.
type Target interface {
	io.WriterAt
	io.ReaderAt
	Sync() error
	Fd() uintptr
	Stat() (os.FileInfo, error)
}

// Writer writes one image.
type Writer struct {
	Manifest api.Manifest
	Source   Source
	Target   Target
	// Progress is called with bytes of data written so far and the total,
	// at most every ProgressEvery and once at the end. Default: none.
	Progress      func(done, total uint64)
	ProgressEvery time.Duration
	// Retries per range (raw) or per stream (zstd) after a transfer error.
	// Default 5.
	Retries int
	// ChunkSize of reads and writes. Default 4 MiB.
	ChunkSize int
	// Samples is how many blocks the read-back checks, SampleSize bytes
	// each. Defaults 16 and 256 KiB.
	Samples    int
	SampleSize uint64
	// Writers is how many writes are in flight at once. Default 2.
	Writers int
	Log     *slog.Logger

	highWater uint64    // end of the furthest chunk sent (read stage only)
	samples   []*sample // by offset; digested by the hash stage
}

// sample is a block of the data whose sha256 is taken as it streams by,
// to be compared with what the device holds after the fsync.
type sample struct {
	off, n uint64
	h      hash.Hash
	sum    []byte // set once the whole block has streamed by
}

type chunk struct {
	off   int64
	buf   []byte
	fresh uint64 // bytes of buf not sent before (a restarted stream resends some)
	rng   int    // index of the range the bytes belong to
	first bool   // the range's first bytes: start its hash afresh
	last  bool   // the range's last bytes: check its hash
}

// Write writes the image and verifies it.
func (w *Writer) Write(ctx context.Context) error {
	m := &w.Manifest
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrVerify, err)
	}
	if w.Retries == 0 {
		w.Retries = 5
	}
	if w.ChunkSize == 0 {
		w.ChunkSize = 4 << 20
	}
	if w.Writers == 0 {
		w.Writers = 2
	}
	if w.Samples == 0 {
		w.Samples = 16
	}
	if w.SampleSize == 0 {
		w.SampleSize = 256 << 10
	}
	if w.ProgressEvery == 0 {
		w.ProgressEvery = time.Second
	}
	if w.Log == nil {
		w.Log = slog.New(slog.DiscardHandler)
	}
	size, err := targetSize(w.Target)
	if err != nil {
		return err
	}
	if size < m.Size {
		return fmt.Errorf("target holds %d bytes, image %s needs %d", size, m.Name, m.Size)
	}
	t0 := time.Now()
	if err := w.zeroHoles(); err != nil {
		return err
	}
	t1 := time.Now()
	w.samples = pickSamples(m, w.Samples, w.SampleSize)
	if err := w.writeData(ctx); err != nil {
		return err
	}
	t2 := time.Now()
	if err := w.Target.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	t3 := time.Now()
	err = w.readBack()
	w.Log.Debug("imaging: done", "holes", t1.Sub(t0), "data", t2.Sub(t1), "fsync", t3.Sub(t2), "readback", time.Since(t3), "err", err)
	return err
}

// holes lists the gaps between ranges in [0, Size).
func holes(m *api.Manifest) []api.Range {
	var out []api.Range
	var at uint64
	for _, r := range m.Ranges {
		if r.Offset > at {
			out = append(out, api.Range{Offset: at, Length: r.Offset - at})
		}
		at = r.Offset + r.Length
	}
	if m.Size > at {
		out = append(out, api.Range{Offset: at, Length: m.Size - at})
	}
	return out
}

func (w *Writer) zeroHoles() error {
	for _, h := range holes(&w.Manifest) {
		if err := zeroRange(w.Target, h.Offset, h.Length); err != nil {
			return fmt.Errorf("zeroing hole %d+%d: %w", h.Offset, h.Length, err)
		}
	}
	return nil
}

// writeData runs three stages concurrently: fetch (network or file, and
// decompression), hash (and check each range as it completes), write.
func (w *Writer) writeData(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	depth := 2 + w.Writers
	pool := &bufPool{ch: make(chan []byte, 2*depth+2), size: w.ChunkSize}
	fetched := make(chan chunk, depth)
	hashed := make(chan chunk, depth)
	herr := make(chan error, 1)
	werr := make(chan error, 1)
	go func() { herr <- w.hashStage(fetched, hashed, cancel) }()
	go func() { werr <- w.writeStage(hashed, pool, cancel) }()
	var ferr error
	if w.Manifest.Format == api.FormatRawZstd {
		ferr = w.readZstd(ctx, pool, fetched)
	} else {
		ferr = w.readRaw(ctx, pool, fetched)
	}
	close(fetched)
	hashErr, writeErr := <-herr, <-werr
	switch {
	case hashErr != nil:
		return hashErr
	case writeErr != nil:
		return writeErr
	}
	return ferr
}

func (w *Writer) hashStage(in <-chan chunk, out chan<- chunk, cancel func()) error {
	defer close(out)
	var h hash.Hash
	var err error
	for c := range in {
		if err != nil {
			continue // drain
		}
		if c.first {
			h = sha256.New()
		}
		h.Write(c.buf)
		w.digestSamples(c)
		out <- c
		if c.last {
			r := w.Manifest.Ranges[c.rng]
			if got := hex.EncodeToString(h.Sum(nil)); got != r.SHA256 {
				err = fmt.Errorf("%w: range %d (%d+%d): sha256 mismatch: got %s, want %s", ErrVerify, c.rng, r.Offset, r.Length, got, r.SHA256)
				cancel()
			}
		}
	}
	return err
}

// writeStage writes chunks with Writers goroutines, so several O_DIRECT
// writes are in flight at once (positional writes need no ordering).
func (w *Writer) writeStage(in <-chan chunk, pool *bufPool, cancel func()) error {
	total := w.Manifest.DataBytes
	var (
		mu   sync.Mutex
		done uint64
		last = time.Now()
		err  error
		wg   sync.WaitGroup
	)
	for range w.Writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range in {
				mu.Lock()
				failed := err != nil
				mu.Unlock()
				if !failed {
					_, e := w.Target.WriteAt(c.buf, c.off)
					mu.Lock()
					if e != nil && err == nil {
						err = fmt.Errorf("writing at %d: %w", c.off, e)
						cancel()
					}
					done += c.fresh
					if w.Progress != nil && time.Since(last) >= w.ProgressEvery {
						w.Progress(done, total)
						last = time.Now()
					}
					mu.Unlock()
				}
				pool.put(c.buf)
			}
		}()
	}
	wg.Wait()
	if err == nil && w.Progress != nil {
		w.Progress(done, total)
	}
	return err
}

// readRaw fetches each range on its own, resuming at the byte it reached.
func (w *Writer) readRaw(ctx context.Context, pool *bufPool, out chan<- chunk) error {
	for i, r := range w.Manifest.Ranges {
		at := r.Offset
		end := r.Offset + r.Length
		for attempt := 0; at < end; attempt++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			rc, err := w.Source.Open(ctx, int64(at), int64(end-at))
			if err == nil {
				at, err = w.pump(ctx, rc, i, at, pool, out)
				rc.Close()
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil || attempt >= w.Retries {
				return fmt.Errorf("range %d (%d+%d) at byte %d: %w", i, r.Offset, r.Length, at, err)
			}
			w.Log.Warn("imaging: transfer broken, resuming", "range", i, "at", at, "attempt", attempt+1, "err", err)
			sleep(ctx, time.Duration(attempt+1)*500*time.Millisecond)
		}
	}
	return nil
}

// pump copies range ri from at to its end from rc to out in chunks. It
// returns how far it got.
func (w *Writer) pump(ctx context.Context, rc io.Reader, ri int, at uint64, pool *bufPool, out chan<- chunk) (uint64, error) {
	r := w.Manifest.Ranges[ri]
	end := r.Offset + r.Length
	for at < end {
		buf, err := pool.get(ctx)
		if err != nil {
			return at, err
		}
		n := min(uint64(len(buf)), end-at)
		k, err := io.ReadFull(rc, buf[:n])
		if k > 0 {
			next := at + uint64(k)
			c := chunk{off: int64(at), buf: buf[:k], rng: ri, first: at == r.Offset, last: next == end}
			if next > w.highWater {
				c.fresh = next - max(at, w.highWater)
				w.highWater = next
			}
			select {
			case out <- c:
			case <-ctx.Done():
				pool.put(buf)
				return at, ctx.Err()
			}
			at = next
		} else {
			pool.put(buf)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("stream ended early: %w", io.ErrUnexpectedEOF)
			}
			return at, err
		}
	}
	return at, nil
}

// readZstd decompresses the whole blob, writing the ranges and skipping
// the holes. After a transfer error the stream starts over and ranges
// already verified are skipped rather than written again.
func (w *Writer) readZstd(ctx context.Context, pool *bufPool, out chan<- chunk) error {
	verified := 0
	for attempt := 0; ; attempt++ {
		err := w.zstdPass(ctx, &verified, pool, out)
		if err == nil || ctx.Err() != nil || attempt >= w.Retries || errors.Is(err, ErrVerify) {
			return err
		}
		w.Log.Warn("imaging: stream broken, restarting", "verified_ranges", verified, "attempt", attempt+1, "err", err)
		sleep(ctx, time.Duration(attempt+1)*500*time.Millisecond)
	}
}

func (w *Writer) zstdPass(ctx context.Context, verified *int, pool *bufPool, out chan<- chunk) error {
	m := &w.Manifest
	rc, err := w.Source.Open(ctx, 0, int64(m.BlobSize))
	if err != nil {
		return err
	}
	defer rc.Close()
	src := &watched{r: rc}
	// A decoder that fails while its source did not is reading a corrupt
	// blob: say so (and do not retry); a broken transfer is retried.
	corrupt := func(err error) error {
		if src.err != nil || ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: stored blob sha256:%s of image %s is corrupt: %w", ErrVerify, m.Digest, m.Name, err)
	}
	dec, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return err
	}
	defer dec.Close()
	var at uint64
	for i, r := range m.Ranges {
		if _, err := io.CopyN(io.Discard, dec, int64(r.Offset-at)); err != nil {
			return corrupt(fmt.Errorf("skipping to range %d at %d: %w", i, r.Offset, err))
		}
		at = r.Offset
		if i < *verified {
			if _, err := io.CopyN(io.Discard, dec, int64(r.Length)); err != nil {
				return corrupt(err)
			}
			at += r.Length
			continue
		}
		at, err = w.pump(ctx, dec, i, at, pool, out)
		if err != nil {
			return corrupt(fmt.Errorf("range %d (%d+%d) at byte %d: %w", i, r.Offset, r.Length, at, err))
		}
		*verified = i + 1 // sent whole; the hash stage fails everything if it does not match
	}
	return nil
}

// watched keeps the first error other than EOF its reader gave.
type watched struct {
	r   io.Reader
	err error
}

func (s *watched) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
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

// bufPool hands out the chunk buffers: made when first needed, up to the
// channel's capacity, then reused. A fast pipeline never holds more than a
// few, so most of the cap is never allocated (32 writers at once would
// otherwise take 40 MiB each up front).
type bufPool struct {
	ch   chan []byte
	size int
	made int // only the fetch stage calls get
}

func (p *bufPool) get(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p.ch:
		return b, nil
	default:
	}
	if p.made < cap(p.ch) {
		p.made++
		return alignedBuf(p.size), nil
	}
	select {
	case b := <-p.ch:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *bufPool) put(b []byte) { p.ch <- b[:cap(b)] }

// alignedBuf returns n bytes aligned to 4 KiB, as O_DIRECT needs.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	if off == 4096 {
		off = 0
	}
	return b[off : off+n : off+n]
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
