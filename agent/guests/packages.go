package guests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/loomfabric/loom/fabric/api"
)

// fetchPackage returns the local copy of a role package, downloading and
// checking it first if needed.
func (s *Supervisor) fetchPackage(ctx context.Context, goal api.GoalVM) (string, error) {
	if goal.PackageDigest == "" || goal.PackageURL == "" {
		return "", fmt.Errorf("package %q is not in the fabric's image store", goal.Package)
	}
	dir := filepath.Join(s.cfg.Dir, "packages")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, goal.PackageDigest+".tar")
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	tmp, err := os.CreateTemp(dir, ".fetch-*")
	if err != nil {
		return "", err
	}
	defer func() {
		_ = tmp.Close()           // closed below on success; this covers the errors
		_ = os.Remove(tmp.Name()) // renamed away on success
	}()
	h := sha256.New()
	if err := s.cfg.Fetch(ctx, goal.PackageURL, io.MultiWriter(tmp, h)); err != nil {
		return "", fmt.Errorf("fetching package %s: %w", goal.Package, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != goal.PackageDigest {
		return "", fmt.Errorf("package %s: sha256 %s, want %s: refusing it", goal.Package, got, goal.PackageDigest)
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}
