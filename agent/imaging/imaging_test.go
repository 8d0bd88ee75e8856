package imaging

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/image"
)

// testImage is 8 MiB: random data in a few spans, zeros elsewhere.
func testImage() []byte {
	img := make([]byte, 8<<20)
	r := rand.New(rand.NewPCG(3, 4))
	for _, span := range [][2]int{{0, 64 << 10}, {1 << 20, 3 << 20}, {(8 << 20) - 4096, 8 << 20}} {
		for i := span[0]; i < span[1]; i++ {
			img[i] = byte(r.Uint32())
		}
	}
	return img
}

// dirtyTarget is a file full of 0xAA, larger than the image.
func dirtyTarget(t *testing.T, size int) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.Write(bytes.Repeat([]byte{0xAA}, size))
	return f
}

func ingest(t *testing.T, data []byte) (api.Manifest, string) {
	t.Helper()
	b := image.Blobs{Dir: t.TempDir()}
	m, err := b.Ingest(bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Name = "test"
	return m, b.Path(m.Digest)
}

func check(t *testing.T, f *os.File, img []byte) {
	t.Helper()
	got := make([]byte, len(img))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) {
		for i := range got {
			if got[i] != img[i] {
				t.Fatalf("target differs from the image at byte %d: %#x, want %#x", i, got[i], img[i])
			}
		}
	}
}

// flaky serves a blob but cuts the first big response halfway.
func flaky(t *testing.T, path string, cuts *atomic.Int32) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		if cuts.Load() > 0 {
			cuts.Add(-1)
			hj := &cutter{ResponseWriter: w, left: 300 << 10}
			http.ServeContent(hj, r, "", fileTime(), f)
			return
		}
		http.ServeContent(w, r, "", fileTime(), f)
	}))
	t.Cleanup(srv.Close)
	return srv
}

type cutter struct {
	http.ResponseWriter
	left int
}

func (c *cutter) Write(p []byte) (int, error) {
	if len(p) > c.left {
		c.ResponseWriter.Write(p[:c.left])
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	c.left -= len(p)
	return c.ResponseWriter.Write(p)
}

func TestWrite(t *testing.T) {
	img := testImage()
	var z bytes.Buffer
	zw, _ := zstd.NewWriter(&z)
	zw.Write(img)
	zw.Close()
	for _, tc := range []struct {
		name string
		data []byte
		http bool
		cuts int32
	}{
		{"raw from a file", img, false, 0},
		{"raw over HTTP", img, true, 0},
		{"raw over HTTP, cut twice, resumed", img, true, 2},
		{"zstd over HTTP", z.Bytes(), true, 0},
		{"zstd over HTTP, cut once, restarted", z.Bytes(), true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, blob := ingest(t, tc.data)
			target := dirtyTarget(t, 9<<20)
			var src Source
			var cuts atomic.Int32
			cuts.Store(tc.cuts)
			if tc.http {
				src = &HTTPSource{URL: flaky(t, blob, &cuts).URL}
			} else {
				f, _ := os.Open(blob)
				defer f.Close()
				src = FileSource{F: f}
			}
			var last uint64
			w := &Writer{Manifest: m, Source: src, Target: target, ChunkSize: 256 << 10, Progress: func(d, _ uint64) { last = d }}
			if err := w.Write(context.Background()); err != nil {
				t.Fatalf("Write: %v", err)
			}
			check(t, target, img)
			if last != m.DataBytes {
				t.Errorf("final progress %d, want %d", last, m.DataBytes)
			}
			if cuts.Load() != 0 {
				t.Errorf("%d planned cuts never happened: the test did not exercise resumption", cuts.Load())
			}
			// The holes were punched, not written.
			if off, err := unix.Seek(int(target.Fd()), 64<<10, unix.SEEK_HOLE); err != nil || off != 64<<10 {
				t.Errorf("SEEK_HOLE from 64K = %d, %v; want a hole at 64K", off, err)
			}
		})
	}
}

func TestWriteRejectsCorruptBlob(t *testing.T) {
	img := testImage()
	m, blob := ingest(t, img)
	f, _ := os.OpenFile(blob, os.O_RDWR, 0)
	f.WriteAt([]byte{img[2<<20] ^ 0xFF}, 2<<20) // flip one byte inside a range
	f.Close()
	target := dirtyTarget(t, 9<<20)
	src, _ := os.Open(blob)
	defer src.Close()
	err := (&Writer{Manifest: m, Source: FileSource{F: src}, Target: target}).Write(context.Background())
	if !errors.Is(err, ErrVerify) {
		t.Fatalf("Write of a corrupt blob = %v, want ErrVerify", err)
	}
	t.Logf("error: %v", err)
}

// countingSource counts how often the blob is opened.
type countingSource struct {
	Source
	opens int
}

func (c *countingSource) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	c.opens++
	return c.Source.Open(ctx, off, n)
}

// A zstd blob that does not decompress is reported as a corrupt stored
// blob, by its digest and image, at once (a retry cannot mend it).
func TestWriteRejectsCorruptZstdBlob(t *testing.T) {
	var z bytes.Buffer
	zw, _ := zstd.NewWriter(&z)
	zw.Write(testImage())
	zw.Close()
	m, blob := ingest(t, z.Bytes())
	f, _ := os.OpenFile(blob, os.O_RDWR, 0)
	f.WriteAt([]byte{0, 0, 0, 0}, 0) // the frame's magic number
	f.Close()
	src, _ := os.Open(blob)
	defer src.Close()
	cs := &countingSource{Source: FileSource{F: src}}
	err := (&Writer{Manifest: m, Source: cs, Target: dirtyTarget(t, 9<<20)}).Write(context.Background())
	if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "stored blob sha256:"+m.Digest+" of image test is corrupt") {
		t.Fatalf("Write of a zstd blob that does not decompress = %v, want a corrupt-blob ErrVerify", err)
	}
	if cs.opens != 1 {
		t.Errorf("the corrupt blob was opened %d times, want once (no retries)", cs.opens)
	}
	t.Logf("error: %v", err)
}

func TestWriteRejectsSmallTarget(t *testing.T) {
	m, blob := ingest(t, testImage())
	src, _ := os.Open(blob)
	defer src.Close()
	if err := (&Writer{Manifest: m, Source: FileSource{F: src}, Target: dirtyTarget(t, 1<<20)}).Write(context.Background()); err == nil {
		t.Errorf("Write onto a 1 MiB target succeeded")
	}
}

func fileTime() (t time.Time) { return t }

// liar is a disk that acknowledges every write but drops those that touch
// [from, to).
type liar struct {
	*os.File
	from, to int64
}

func (l liar) WriteAt(p []byte, off int64) (int, error) {
	if off < l.to && off+int64(len(p)) > l.from {
		return len(p), nil
	}
	return l.File.WriteAt(p, off)
}

// The read-back catches a device that loses writes: the last chunk here.
func TestWriteCatchesLostWrites(t *testing.T) {
	img := testImage()
	m, blob := ingest(t, img)
	src, _ := os.Open(blob)
	defer src.Close()
	target := liar{File: dirtyTarget(t, 9<<20), from: (8 << 20) - 4096, to: 8 << 20}
	err := (&Writer{Manifest: m, Source: FileSource{F: src}, Target: target, ChunkSize: 256 << 10}).Write(context.Background())
	if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "read-back") {
		t.Fatalf("Write onto a disk that lost its last 4 KiB = %v, want a read-back ErrVerify", err)
	}
	t.Logf("error: %v", err)
}

func TestPickSamples(t *testing.T) {
	m := api.Manifest{Ranges: []api.Range{{Offset: 4096, Length: 64 << 10}, {Offset: 1 << 20, Length: 10 << 20}, {Offset: 16 << 20, Length: 12288}}}
	for _, r := range m.Ranges {
		m.DataBytes += r.Length
	}
	for range 100 {
		ss := pickSamples(&m, 16, 256<<10)
		if len(ss) < 2 || len(ss) > 16 {
			t.Fatalf("%d samples, want 2..16", len(ss))
		}
		if ss[0].off != 4096 || ss[0].n != 64<<10 {
			t.Errorf("first sample %d+%d, want the whole first range 4096+65536", ss[0].off, ss[0].n)
		}
		if l := ss[len(ss)-1]; l.off != 16<<20 || l.n != 12288 {
			t.Errorf("last sample %d+%d, want the whole last range", l.off, l.n)
		}
		for i, s := range ss {
			in := false
			for _, r := range m.Ranges {
				in = in || s.off >= r.Offset && s.off+s.n <= r.Offset+r.Length && (s.off-r.Offset)%4096 == 0
			}
			if !in || s.n == 0 || s.n > 256<<10+4096 || i > 0 && s.off <= ss[i-1].off {
				t.Fatalf("sample %d+%d: not a 4K-aligned block inside a range, or out of order", s.off, s.n)
			}
			// O_DIRECT reads need whole blocks: every length is a multiple
			// of 4 KiB here, as every range's is.
			if s.n%4096 != 0 {
				t.Fatalf("sample %d+%d: length not a multiple of 4 KiB", s.off, s.n)
			}
		}
	}
	// The last block ends where the data does even when the range's length
	// minus the sample size is not a multiple of 4 KiB.
	m = api.Manifest{Ranges: []api.Range{{Offset: 0, Length: 1<<20 + 4096}}, DataBytes: 1<<20 + 4096}
	ss := pickSamples(&m, 2, 300000)
	if l := ss[len(ss)-1]; l.off+l.n != 1<<20+4096 || l.off%4096 != 0 {
		t.Errorf("last sample %d+%d, want a 4K-aligned block ending at %d", l.off, l.n, 1<<20+4096)
	}
}

// brokenSource fails every read.
type brokenSource struct{}

func (brokenSource) Open(context.Context, int64, int64) (io.ReadCloser, error) {
	return nil, errors.New("connection refused")
}

func TestWriteTransferFailure(t *testing.T) {
	m, _ := ingest(t, testImage())
	w := &Writer{Manifest: m, Source: brokenSource{}, Target: dirtyTarget(t, 9<<20), Retries: 1}
	err := w.Write(context.Background())
	if !errors.Is(err, ErrTransfer) || errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Write from a source that fails = %v, want an ErrTransfer naming the cause", err)
	}
	if strings.Contains(err.Error(), ErrTransfer.Error()) {
		t.Errorf("the mark changed the text: %v", err)
	}
}

// syncCounter counts the flushes of a target; the first fails if told to.
type syncCounter struct {
	*os.File
	syncs    atomic.Int32
	failOnce atomic.Bool
}

func (s *syncCounter) Sync() error {
	s.syncs.Add(1)
	if s.failOnce.CompareAndSwap(true, false) {
		return errors.New("flush failed")
	}
	return s.File.Sync()
}

// The target is flushed in the background as the data goes (every
// FlushEvery bytes, one flush at a time) and once more at the end; a
// flush that failed in the background fails the image, although the
// final one succeeds (Linux reports a writeback error once).
func TestWriteFlushesAsItGoes(t *testing.T) {
	img := testImage()
	m, blob := ingest(t, img)
	src, _ := os.Open(blob)
	defer src.Close()
	for _, tc := range []struct {
		name       string
		every      int64
		min, max   int32
		failFirst  bool
		wantFailed bool
	}{
		{"every 512 KiB", 512 << 10, 2, 1 + int32(m.DataBytes/(512<<10)), false, false},
		{"only at the end", -1, 1, 1, false, false},
		{"a background flush failed once", 512 << 10, 1, 1 + int32(m.DataBytes/(512<<10)), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := &syncCounter{File: dirtyTarget(t, 9<<20)}
			target.failOnce.Store(tc.failFirst)
			err := (&Writer{Manifest: m, Source: FileSource{F: src}, Target: target, ChunkSize: 128 << 10, FlushEvery: tc.every}).Write(context.Background())
			if tc.wantFailed {
				if err == nil || !strings.Contains(err.Error(), "fsync: flush failed") {
					t.Fatalf("Write with a failed background flush = %v, want its fsync error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Write: %v", err)
			}
			check(t, target.File, img)
			if n := target.syncs.Load(); n < tc.min || n > tc.max {
				t.Errorf("%d flushes of %d data bytes, want %d to %d", n, m.DataBytes, tc.min, tc.max)
			}
		})
	}
}
