package guests_test

import (
	"os"
	"testing"

	"github.com/loomfabric/loom/scripts/vmtest"
)

// TestMain removes the binaries the VM tests built (vmtest.Binaries).
func TestMain(m *testing.M) {
	code := m.Run()
	vmtest.Cleanup()
	os.Exit(code)
}
