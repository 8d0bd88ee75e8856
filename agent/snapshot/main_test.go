package snapshot_test

import (
	"testing"

	"github.com/loomfabric/loom/scripts/vmtest"
)

func TestMain(m *testing.M) { vmtest.Main(m) }
