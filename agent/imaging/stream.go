// Reading the image: raw ranges or the zstd stream from the Source, cut into
// chunks for the hash and write stages.
package imaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"
)

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
				_ = rc.Close() // read side; pump's error is the one that counts
			}
			if err == nil {
				break
			}
			if ctx.Err() != nil || attempt >= w.Retries {
				return transferError{fmt.Errorf("range %d (%d+%d) at byte %d: %w", i, r.Offset, r.Length, at, err)}
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
	defer func() { _ = rc.Close() }() // read side
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
