package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/loomfabric/loom/agent/accel"
	"github.com/loomfabric/loom/fabric/api"
)

// AccelEnv overrides the accelerator for the lab, the tests and the
// benchmarks: auto (the default), kvm or tcg.
const AccelEnv = "LOOM_ACCEL"

// DecideAccel makes the accelerator decision for the lab, the VM tests and
// the benchmarks of the checkout at root: mode (or $LOOM_ACCEL when mode is
// ""), probing with the kernel of `make initramfs` (or `make images`),
// cached in root/build/accel.json. A kvm that was asked for and cannot run
// a guest is an error, with the probe's reason.
func DecideAccel(ctx context.Context, root, mode string, log *slog.Logger) (api.Accel, error) {
	if mode == "" {
		mode = os.Getenv(AccelEnv)
	}
	m, err := accel.ParseMode(mode)
	if err != nil {
		return api.Accel{}, fmt.Errorf("%s: %w", AccelEnv, err)
	}
	kernel := filepath.Join(root, "build/maintenance/vmlinuz")
	if _, err := os.Stat(kernel); err != nil {
		kernel = filepath.Join(root, "build/guest/vmlinuz")
	}
	v, err := accel.Decide(ctx, accel.Config{Mode: m, Kernel: kernel, CacheDir: filepath.Join(root, "build"), Log: log})
	if err != nil {
		return v, fmt.Errorf("accelerator (%s=%s): %w", AccelEnv, m, err)
	}
	return v, nil
}
