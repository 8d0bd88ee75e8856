package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

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
