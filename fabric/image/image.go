// Package image is loomd's image store. An uploaded image is kept once per
// content (blobs/<sha256>, written sparse) in the data directory; its
// manifest (package api: format, logical size, the block map of data
// ranges with a sha256 each, and a digest over the map) is computed while
// the upload streams and kept in the store under the image's name.
//
// Formats: "raw" (the disk image itself; holes are found by content, in
// BlockSize blocks) and "raw+zstd" (detected by the zstd magic; the map is
// computed on the decompressed stream). A bmaptool .bmap file may be given
// with a raw image: its ranges are used, and their sha256 checksums must
// match the uploaded bytes.
package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/klauspost/compress/zstd"

	"github.com/loomfabric/loom/fabric/api"
)

// BlockSize is the granularity of the block map.
const BlockSize = 4096

// MaxRange caps one range so verification and resumption stay fine-grained.
const MaxRange = 32 << 20

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName checks an image name.
func ValidName(n string) error {
	if !nameRE.MatchString(n) {
		return fmt.Errorf("image name %q: want 1-63 of a-z 0-9 . _ -, starting with a letter or digit", n)
	}
	return nil
}

// Blobs is the blob directory.
type Blobs struct {
	Dir string
}

// Path is where the blob with a digest lives.
func (b Blobs) Path(digest string) string { return filepath.Join(b.Dir, digest) }

// mapper builds the block map of a logical byte stream fed to Write.
type mapper struct {
	off    uint64
	ranges []api.Range
	cur    *api.Range
	h      hash.Hash
	given  []api.Range // bmap ranges to follow instead of detecting holes
	gi     int
	buf    []byte // partial block
	zero   [BlockSize]byte
}

func (m *mapper) Write(p []byte) (int, error) {
	n := len(p)
	if len(m.buf) > 0 {
		k := min(BlockSize-len(m.buf), len(p))
		m.buf = append(m.buf, p[:k]...)
		p = p[k:]
		if len(m.buf) == BlockSize {
			m.block(m.buf)
			m.buf = m.buf[:0]
		}
	}
	for len(p) >= BlockSize {
		m.block(p[:BlockSize])
		p = p[BlockSize:]
	}
	if len(p) > 0 {
		m.buf = append(m.buf, p...)
	}
	return n, nil
}

func (m *mapper) isData(b []byte) bool {
	if m.given == nil {
		return !bytes.Equal(b, m.zero[:len(b)])
	}
	for m.gi < len(m.given) && m.given[m.gi].Offset+m.given[m.gi].Length <= m.off {
		m.gi++
	}
	return m.gi < len(m.given) && m.given[m.gi].Offset <= m.off
}

func (m *mapper) block(b []byte) {
	if m.isData(b) {
		split := m.given == nil && m.cur != nil && m.cur.Length >= MaxRange ||
			m.given != nil && m.cur != nil && m.off == m.given[m.gi].Offset
		if split {
			m.close()
		}
		if m.cur == nil {
			m.cur = &api.Range{Offset: m.off}
			m.h = sha256.New()
		}
		m.h.Write(b)
		m.cur.Length += uint64(len(b))
	} else if m.cur != nil {
		m.close()
	}
	m.off += uint64(len(b))
}

func (m *mapper) close() {
	m.cur.SHA256 = hex.EncodeToString(m.h.Sum(nil))
	m.ranges = append(m.ranges, *m.cur)
	m.cur = nil
}

func (m *mapper) finish() []api.Range {
	if len(m.buf) > 0 {
		m.block(m.buf)
		m.buf = nil
	}
	if m.cur != nil {
		m.close()
	}
	return m.ranges
}

// sparseWriter writes a raw image to a file, seeking over zero blocks.
type sparseWriter struct {
	f    *os.File
	off  int64
	zero [BlockSize]byte
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), BlockSize)
		if !bytes.Equal(p[:k], w.zero[:k]) {
			if _, err := w.f.WriteAt(p[:k], w.off); err != nil {
				return 0, err
			}
		}
		w.off += int64(k)
		p = p[k:]
	}
	return n, nil
}

// Ingest reads an image from r into the blob directory and returns its
// manifest (Name empty: the caller names it). bmap, if not nil, gives the
// data ranges of a raw image (with their sha256 checked against the data).
func (b Blobs) Ingest(r io.Reader, bmap []api.Range) (api.Manifest, error) {
	if err := os.MkdirAll(b.Dir, 0o700); err != nil {
		return api.Manifest{}, err
	}
	tmp, err := os.CreateTemp(b.Dir, "upload-*")
	if err != nil {
		return api.Manifest{}, err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // a no-op once renamed
	defer func() { _ = tmp.Close() }()           // closed and checked before the rename; this covers the errors

	br := &peekReader{r: r}
	head, _ := br.peek(4)
	format := api.FormatRaw
	if bytes.Equal(head, zstdMagic) {
		format = api.FormatRawZstd
		if bmap != nil {
			return api.Manifest{}, errors.New("a .bmap describes a raw image; this one is zstd-compressed")
		}
	}
	blobHash := sha256.New()
	m := &mapper{given: bmap}
	if bmap != nil && len(bmap) == 0 {
		m.given = []api.Range{} // an empty map: everything is a hole
	}
	var size, logical uint64
	switch format {
	case api.FormatRaw:
		sw := &sparseWriter{f: tmp}
		n, err := io.Copy(io.MultiWriter(blobHash, sw, m), br)
		if err != nil {
			return api.Manifest{}, fmt.Errorf("reading image: %w", err)
		}
		size, logical = uint64(n), uint64(n)
		if err := tmp.Truncate(n); err != nil {
			return api.Manifest{}, err
		}
	case api.FormatRawZstd:
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			dec, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1))
			if err != nil {
				pr.CloseWithError(err)
				done <- err
				return
			}
			defer dec.Close()
			n, err := io.Copy(m, dec)
			logical = uint64(n)
			pr.CloseWithError(err)
			done <- err
		}()
		n, err := io.Copy(io.MultiWriter(blobHash, tmp, pw), br)
		pw.CloseWithError(err)
		if derr := <-done; derr != nil && err == nil {
			err = fmt.Errorf("decompressing: %w", derr)
		}
		if err != nil {
			return api.Manifest{}, fmt.Errorf("reading image: %w", err)
		}
		size = uint64(n)
	}
	if logical%BlockSize != 0 {
		return api.Manifest{}, fmt.Errorf("image size %d is not a multiple of %d bytes: not a disk image", logical, BlockSize)
	}
	ranges := m.finish()
	if bmap != nil {
		if err := checkBmap(bmap, ranges); err != nil {
			return api.Manifest{}, err
		}
	}
	if err := tmp.Sync(); err != nil {
		return api.Manifest{}, err
	}
	if err := tmp.Close(); err != nil {
		return api.Manifest{}, err
	}
	man := api.Manifest{
		Digest: hex.EncodeToString(blobHash.Sum(nil)), Format: format, Size: logical, BlobSize: size,
		BlockSize: BlockSize, Ranges: ranges,
	}
	if man.Ranges == nil {
		man.Ranges = []api.Range{}
	}
	man.DataBytes = man.SumRanges()
	man.MapDigest = man.ComputeMapDigest()
	if err := os.Rename(tmp.Name(), b.Path(man.Digest)); err != nil {
		return api.Manifest{}, err
	}
	return man, nil
}

// checkBmap compares the ranges found in the upload (which follow the
// bmap's boundaries) with the bmap's, checksums included.
func checkBmap(bmap, got []api.Range) error {
	if len(bmap) != len(got) {
		return fmt.Errorf("the .bmap maps %d ranges but %d were found in the image (is the .bmap for another image?)", len(bmap), len(got))
	}
	for i, r := range bmap {
		g := got[i]
		if r.Offset != g.Offset || r.Length != g.Length {
			return fmt.Errorf("bmap range %d is %d+%d, the image ends it at %d+%d", i, r.Offset, r.Length, g.Offset, g.Length)
		}
		if r.SHA256 != "" && r.SHA256 != g.SHA256 {
			return fmt.Errorf("bmap range %d (%d+%d): sha256 %s in the .bmap, %s in the image", i, r.Offset, r.Length, r.SHA256, g.SHA256)
		}
	}
	return nil
}

// peekReader lets Ingest look at the first bytes without losing them.
type peekReader struct {
	r    io.Reader
	head []byte
}

func (p *peekReader) peek(n int) ([]byte, error) {
	buf := make([]byte, n)
	k, err := io.ReadFull(p.r, buf)
	p.head = buf[:k]
	return p.head, err
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	return p.r.Read(b)
}
