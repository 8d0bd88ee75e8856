package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// ErrInUse means an image cannot be removed while something refers to it.
var ErrInUse = errors.New("in use")

// KV is what the library needs of the store; *store.Store has it.
type KV interface {
	CreateImage(ctx context.Context, m api.Manifest) error
	Image(ctx context.Context, name string) (api.Manifest, error)
	Images(ctx context.Context) ([]api.Manifest, error)
	DeleteImage(ctx context.Context, name string) error
}

// Library is the image store: blobs on disk, manifests in the store.
type Library struct {
	Blobs Blobs
	KV    KV
	// InUse says who uses an image ("" if nobody). Default: nobody.
	InUse func(ctx context.Context, name string) (string, error)
	// Fetch, if set, opens an image's blob elsewhere (another replica)
	// when this one's disk lacks it; the copy is kept once its sha256 is
	// the manifest's digest. Default: a missing blob is an error.
	Fetch func(ctx context.Context, m api.Manifest) (io.ReadCloser, error)

	fetchMu sync.Mutex // one fetch at a time (a rack asking for one blob)
}

// Add ingests an image under name.
func (l *Library) Add(ctx context.Context, name string, r io.Reader, bmap []api.Range) (api.Manifest, error) {
	if err := ValidName(name); err != nil {
		return api.Manifest{}, err
	}
	if _, err := l.KV.Image(ctx, name); err == nil {
		return api.Manifest{}, fmt.Errorf("image %s: %w (remove it first)", name, store.ErrExists)
	}
	m, err := l.Blobs.Ingest(r, bmap)
	if err != nil {
		return api.Manifest{}, fmt.Errorf("image %s: %w", name, err)
	}
	m.Name = name
	if err := l.KV.CreateImage(ctx, m); err != nil {
		l.gc(ctx, m.Digest)
		return api.Manifest{}, err
	}
	return m, nil
}

// Get returns a manifest.
func (l *Library) Get(ctx context.Context, name string) (api.Manifest, error) {
	return l.KV.Image(ctx, name)
}

// List returns every manifest.
func (l *Library) List(ctx context.Context) ([]api.Manifest, error) { return l.KV.Images(ctx) }

// Remove deletes an image unless something uses it.
func (l *Library) Remove(ctx context.Context, name string) error {
	m, err := l.KV.Image(ctx, name)
	if err != nil {
		return err
	}
	if l.InUse != nil {
		user, err := l.InUse(ctx, name)
		if err != nil {
			return err
		}
		if user != "" {
			return fmt.Errorf("image %s: %w by %s", name, ErrInUse, user)
		}
	}
	if err := l.KV.DeleteImage(ctx, name); err != nil {
		return err
	}
	l.gc(ctx, m.Digest)
	return nil
}

// gc removes a blob no manifest refers to any more.
func (l *Library) gc(ctx context.Context, digest string) {
	all, err := l.KV.Images(ctx)
	if err != nil {
		return
	}
	for _, m := range all {
		if m.Digest == digest {
			return
		}
	}
	if err := os.Remove(l.Blobs.Path(digest)); err != nil && !errors.Is(err, os.ErrNotExist) {
		slog.Warn("image blob left behind", "digest", digest, "err", err)
	}
}

// BlobPath is the file holding an image's bytes.
func (l *Library) BlobPath(m api.Manifest) string { return l.Blobs.Path(m.Digest) }

type localOnlyKey struct{}

// LocalOnly marks ctx's OpenBlob as one that must not fetch: a replica
// asking another for a blob (it would ask back, each waiting on the other).
func LocalOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, localOnlyKey{}, true)
}

func isLocalOnly(ctx context.Context) bool { b, _ := ctx.Value(localOnlyKey{}).(bool); return b }

// OpenBlob opens an image's bytes: from this disk, or fetched (Fetch)
// and checked first when this disk lacks them.
func (l *Library) OpenBlob(ctx context.Context, m api.Manifest) (*os.File, error) {
	f, err := os.Open(l.BlobPath(m))
	if err == nil || !errors.Is(err, os.ErrNotExist) || l.Fetch == nil || isLocalOnly(ctx) {
		return f, err
	}
	l.fetchMu.Lock()
	defer l.fetchMu.Unlock()
	if f, err := os.Open(l.BlobPath(m)); err == nil { // fetched while this one waited
		return f, nil
	}
	if err := os.MkdirAll(l.Blobs.Dir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(l.Blobs.Dir, "fetch-*")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // a no-op once renamed
	defer func() { _ = tmp.Close() }()           // checked below before the rename
	h := sha256.New()
	src, err := l.Fetch(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("image %s: fetching its blob from another replica: %w", m.Name, err)
	}
	_, err = io.Copy(io.MultiWriter(tmp, h), src)
	_ = src.Close() // read side
	if err != nil {
		return nil, fmt.Errorf("image %s: fetching its blob from another replica: %w", m.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.Digest {
		return nil, fmt.Errorf("image %s: the blob fetched from another replica has sha256 %s, the manifest says %s: not kept", m.Name, got, m.Digest)
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), l.BlobPath(m)); err != nil {
		return nil, err
	}
	return os.Open(l.BlobPath(m))
}
