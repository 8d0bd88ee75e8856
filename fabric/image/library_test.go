package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
)

// TestOpenBlobFetches: a blob this disk lacks is fetched, kept only if
// its sha256 is the manifest's, and not fetched under LocalOnly.
func TestOpenBlobFetches(t *testing.T) {
	src := Blobs{Dir: t.TempDir()}
	data := bytes.Repeat([]byte("loom"), 4096)
	m, err := src.Ingest(bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Name = "img"
	served := data
	fetches := 0
	l := &Library{Blobs: Blobs{Dir: t.TempDir()}, Fetch: func(context.Context, api.Manifest) (io.ReadCloser, error) {
		fetches++
		return io.NopCloser(bytes.NewReader(served)), nil
	}}
	ctx := context.Background()
	if _, err := l.OpenBlob(LocalOnly(ctx), m); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LocalOnly open of a missing blob = %v, want not-exist (no fetch)", err)
	}
	served = append(bytes.Clone(data[:len(data)-1]), 'X') // corrupt
	if _, err := l.OpenBlob(ctx, m); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("open with a corrupt fetch = %v, want a sha256 mismatch", err)
	}
	if _, err := os.Stat(l.BlobPath(m)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a corrupt fetch was kept: %v", err)
	}
	served = data
	f, err := l.OpenBlob(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	_ = f.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("fetched blob differs (%d bytes, want %d)", len(got), len(data))
	}
	n := fetches
	if f, err := l.OpenBlob(ctx, m); err != nil {
		t.Fatal(err)
	} else {
		_ = f.Close()
	}
	if fetches != n {
		t.Errorf("a kept blob was fetched again")
	}
}
