package guests_test

import (
	"testing"

	"github.com/loomfabric/loom/scripts/vmtest"
)

// TestMain removes the binaries the VM tests built (vmtest.Binaries).
func TestMain(m *testing.M) { vmtest.Main(m) }
