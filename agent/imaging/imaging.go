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
//     "raw+zstd" image as one decompressed stream. One goroutine reads and
//     hashes while another writes the previous chunk, so hashing overlaps
//     with I/O; buffers come from a small fixed pool (memory stays flat
//     whatever the image size). Each range's sha256 must match.
//  3. A broken transfer is resumed: a raw range continues from the exact
//     byte it reached (its running hash continues too); a zstd stream is
//     reopened and the ranges already verified are skipped.
//  4. fsync, then a sampled read-back: the page cache is dropped and some
//     ranges (the first, the last and a few between) are read from the
//     device and hashed again.
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
	"math/rand/v2"
	"os"
	"time"

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
	// SampleBytes bounds the read-back check. Default 64 MiB.
	SampleBytes uint64
	Log         *slog.Logger

	highWater uint64 // end of the furthest chunk sent (read stage only)
}

type chunk struct {
	off   int64
	buf   []byte
	fresh uint64 // bytes of buf not sent before (a restarted stream resends some)
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
	if w.SampleBytes == 0 {
		w.SampleBytes = 64 << 20
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
	if err := w.zeroHoles(); err != nil {
		return err
	}
	if err := w.writeData(ctx); err != nil {
		return err
	}
	if err := w.Target.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	return w.readBack()
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

// writeData runs the read+hash stage and the write stage concurrently.
func (w *Writer) writeData(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const depth = 4
	pool := make(chan []byte, depth+2)
	for range depth + 2 {
		pool <- make([]byte, w.ChunkSize)
	}
	chunks := make(chan chunk, depth)
	werr := make(chan error, 1)
	total := w.Manifest.DataBytes
	go func() {
		var done uint64
		last := time.Now()
		var err error
		for c := range chunks {
			if err == nil {
				if _, e := w.Target.WriteAt(c.buf, c.off); e != nil {
					err = fmt.Errorf("writing at %d: %w", c.off, e)
					cancel()
				}
				done += c.fresh
				if w.Progress != nil && time.Since(last) >= w.ProgressEvery {
					w.Progress(done, total)
					last = time.Now()
				}
			}
			pool <- c.buf[:cap(c.buf)]
		}
		if err == nil && w.Progress != nil {
			w.Progress(done, total)
		}
		werr <- err
	}()
	var rerr error
	if w.Manifest.Format == api.FormatRawZstd {
		rerr = w.readZstd(ctx, pool, chunks)
	} else {
		rerr = w.readRaw(ctx, pool, chunks)
	}
	close(chunks)
	if err := <-werr; err != nil {
		return err
	}
	return rerr
}

// readRaw fetches each range on its own, resuming at the byte it reached.
func (w *Writer) readRaw(ctx context.Context, pool chan []byte, out chan<- chunk) error {
	for i, r := range w.Manifest.Ranges {
		h := sha256.New()
		at := r.Offset
		end := r.Offset + r.Length
		for attempt := 0; at < end; attempt++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			rc, err := w.Source.Open(ctx, int64(at), int64(end-at))
			if err == nil {
				at, err = w.pump(ctx, rc, h, at, end, pool, out)
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
		if got := hex.EncodeToString(h.Sum(nil)); got != r.SHA256 {
			return fmt.Errorf("%w: range %d (%d+%d): sha256 mismatch: got %s, want %s", ErrVerify, i, r.Offset, r.Length, got, r.SHA256)
		}
	}
	return nil
}

// pump copies [at, end) from rc to out in chunks, hashing as it goes. It
// returns how far it got.
func (w *Writer) pump(ctx context.Context, rc io.Reader, h hash.Hash, at, end uint64, pool chan []byte, out chan<- chunk) (uint64, error) {
	for at < end {
		var buf []byte
		select {
		case buf = <-pool:
		case <-ctx.Done():
			return at, ctx.Err()
		}
		n := min(uint64(len(buf)), end-at)
		k, err := io.ReadFull(rc, buf[:n])
		if k > 0 {
			h.Write(buf[:k])
			end := at + uint64(k)
			c := chunk{off: int64(at), buf: buf[:k]}
			if end > w.highWater {
				c.fresh = end - max(at, w.highWater)
				w.highWater = end
			}
			out <- c
			at = end
		} else {
			pool <- buf
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
func (w *Writer) readZstd(ctx context.Context, pool chan []byte, out chan<- chunk) error {
	verified := 0
	for attempt := 0; ; attempt++ {
		err := w.zstdPass(ctx, &verified, pool, out)
		if err == nil || errors.Is(err, ErrVerify) || ctx.Err() != nil || attempt >= w.Retries {
			return err
		}
		w.Log.Warn("imaging: stream broken, restarting", "verified_ranges", verified, "attempt", attempt+1, "err", err)
		sleep(ctx, time.Duration(attempt+1)*500*time.Millisecond)
	}
}

func (w *Writer) zstdPass(ctx context.Context, verified *int, pool chan []byte, out chan<- chunk) error {
	m := &w.Manifest
	rc, err := w.Source.Open(ctx, 0, int64(m.BlobSize))
	if err != nil {
		return err
	}
	defer rc.Close()
	dec, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		return err
	}
	defer dec.Close()
	var at uint64
	for i, r := range m.Ranges {
		if _, err := io.CopyN(io.Discard, dec, int64(r.Offset-at)); err != nil {
			return fmt.Errorf("skipping to range %d at %d: %w", i, r.Offset, err)
		}
		at = r.Offset
		if i < *verified {
			if _, err := io.CopyN(io.Discard, dec, int64(r.Length)); err != nil {
				return err
			}
			at += r.Length
			continue
		}
		h := sha256.New()
		at, err = w.pump(ctx, dec, h, at, r.Offset+r.Length, pool, out)
		if err != nil {
			return fmt.Errorf("range %d (%d+%d) at byte %d: %w", i, r.Offset, r.Length, at, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != r.SHA256 {
			return fmt.Errorf("%w: range %d (%d+%d): sha256 mismatch: got %s, want %s", ErrVerify, i, r.Offset, r.Length, got, r.SHA256)
		}
		*verified = i + 1
	}
	return nil
}

// readBack drops the cached pages and hashes a sample of ranges again.
func (w *Writer) readBack() error {
	m := &w.Manifest
	if len(m.Ranges) == 0 {
		return nil
	}
	dropCache(w.Target)
	idx := []int{0, len(m.Ranges) - 1}
	for range 6 {
		idx = append(idx, rand.IntN(len(m.Ranges)))
	}
	var read uint64
	buf := make([]byte, 1<<20)
	seen := map[int]bool{}
	for _, i := range idx {
		r := m.Ranges[i]
		if seen[i] || (read > 0 && read+r.Length > w.SampleBytes) {
			continue
		}
		seen[i] = true
		h := sha256.New()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(w.Target, int64(r.Offset), int64(r.Length)), buf); err != nil {
			return fmt.Errorf("read-back of range %d: %w", i, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != r.SHA256 {
			return fmt.Errorf("%w: read-back of range %d (%d+%d): sha256 %s on the device, want %s", ErrVerify, i, r.Offset, r.Length, got, r.SHA256)
		}
		read += r.Length
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
