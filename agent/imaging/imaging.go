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
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/loomfabric/loom/fabric/api"
)

// ErrVerify marks a verification failure (as opposed to an I/O error).
var ErrVerify = errors.New("verification failed")

// ErrTransfer is what a write that could not fetch the image (after its
// retries) wraps: errors.Is(err, ErrTransfer).
var ErrTransfer = errors.New("transfer failed")

// transferError marks err as a transfer failure without changing its text.
type transferError struct{ error }

func (e transferError) Unwrap() error      { return e.error }
func (transferError) Is(target error) bool { return target == ErrTransfer }

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
	// Writers is how many writes are in flight at once. Default 4.
	Writers int
	// FlushEvery starts a flush of the target (fsync, in the background:
	// writes go on) after each FlushEvery bytes written, so the one after
	// the last write has only the tail left to make durable. Default
	// 256 MiB; negative: only the final one.
	FlushEvery int64
	Log        *slog.Logger

	highWater uint64    // end of the furthest chunk sent (read stage only)
	samples   []*sample // by offset; digested by the hash stage
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
		w.Writers = 4
	}
	if w.Samples == 0 {
		w.Samples = 16
	}
	if w.FlushEvery == 0 {
		w.FlushEvery = 256 << 20
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
		mu       sync.Mutex
		done     uint64
		last     = time.Now()
		err      error
		wg       sync.WaitGroup
		unsynced int64
		flushing sync.WaitGroup // at most one background flush
		inFlush  bool
	)
	// flush makes what is written so far durable while writes go on. A
	// failed flush fails the image: Linux reports a writeback error to a
	// file's fsync once, so a later one could succeed with data lost.
	flush := func() {
		inFlush = true
		flushing.Add(1)
		go func() {
			defer flushing.Done()
			e := w.Target.Sync()
			mu.Lock()
			inFlush = false
			if e != nil && err == nil {
				err = fmt.Errorf("fsync: %w", e)
				cancel()
			}
			mu.Unlock()
		}()
	}
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
					unsynced += int64(len(c.buf))
					if w.FlushEvery > 0 && unsynced >= w.FlushEvery && !inFlush && e == nil {
						unsynced = 0
						flush()
					}
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
	flushing.Wait()
	mu.Lock() // a flush's error is set under it
	defer mu.Unlock()
	if err == nil && w.Progress != nil {
		w.Progress(done, total)
	}
	return err
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
