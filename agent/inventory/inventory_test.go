package inventory

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/fabric/api"
)

func TestCollect(t *testing.T) {
	for _, tc := range []struct {
		name string
		root string
		want api.Inventory
	}{
		{
			name: "qemu-like tree",
			root: "testdata/qemu",
			want: api.Inventory{
				CPU:    api.CPU{Model: "QEMU TCG CPU version 2.5+", Count: 2},
				Memory: 2 * 0x8000000, // two online 128 MiB blocks; the offline one does not count
				DMI:    api.DMI{Vendor: "QEMU", Product: "Standard PC (Q35 + ICH9, 2009)", Serial: "SN-42", UUID: "4cae4d26-b1c8-4450-b8ef-3d290b8d4695"},
				NICs:   []api.NIC{{Name: "eth0", MAC: "52:54:00:4c:00:01", SpeedMbps: 1000, Link: true}},
				Disks: []api.Disk{
					{Name: "sda", SizeBytes: 1953525168 * 512, Model: "Samsung SSD 870", Removable: true},
					{Name: "vda", SizeBytes: 16 << 30, Serial: "vd-serial", Rotational: true},
				},
			},
		},
		{
			name: "no memory blocks: MemTotal, nothing else",
			root: "testdata/nomemblocks",
			want: api.Inventory{
				CPU:    api.CPU{Model: "QEMU TCG CPU version 2.5+", Count: 2},
				Memory: 1000000 * 1024,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Collect(tc.root)
			if err != nil {
				t.Fatalf("Collect(%s) = %v", tc.root, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Collect(%s) (-want +got):\n%s", tc.root, diff)
			}
		})
	}
}

func TestCollectNoCPUInfo(t *testing.T) {
	if _, err := Collect(t.TempDir()); err == nil {
		t.Errorf("Collect(empty dir) succeeded, want an error naming /proc/cpuinfo")
	}
}
