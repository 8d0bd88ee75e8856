package api

import (
	"strings"
	"testing"
)

func TestProfileValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p       Profile
		wantErr string // substring naming the field; "" = valid
	}{
		{"minimal", Profile{Name: "host", Image: "host"}, ""},
		{"bad name", Profile{Name: "Host!", Image: "host"}, "name:"},
		{"no image", Profile{Name: "host"}, "image:"},
		{"bad disk rule", Profile{Name: "host", Image: "i", Disk: "largest"}, "disk:"},
		{"bad size", Profile{Name: "host", Image: "i", Disk: "first:lots"}, "disk:"},
		{"path outside /dev", Profile{Name: "host", Image: "i", Disk: "path:/etc/passwd"}, "disk:"},
		{"two-line kernel args", Profile{Name: "host", Image: "i", KernelArgs: "a\nb"}, "kernelArgs:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.Default()
			err := tc.p.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want valid", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate() = %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}

func TestDiskRuleSelect(t *testing.T) {
	disks := []Disk{
		{Name: "sda", SizeBytes: 32 << 30, Removable: true, Serial: "USB1"},
		{Name: "vda", SizeBytes: 4 << 30, Serial: "small"},
		{Name: "vdb", SizeBytes: 64 << 30, Serial: "big"},
	}
	for rule, want := range map[string]string{
		"first:8GiB":    "vdb",
		"first:1GiB":    "vda",
		"path:/dev/vdb": "vdb",
		"serial:small":  "vda",
		"first:1TiB":    "",
		"serial:USB1":   "sda",
	} {
		r, err := ParseDiskRule(rule)
		if err != nil {
			t.Fatalf("ParseDiskRule(%q): %v", rule, err)
		}
		d, err := r.Select(disks)
		if got := d.Name; got != want || (want == "") != (err != nil) {
			t.Errorf("Select(%q) = %q, %v; want %q", rule, got, err, want)
		}
	}
}

func FuzzProfile(f *testing.F) {
	f.Add("host", "img", "first:8GiB", "quiet")
	f.Add("x", "", "path:/dev/vda", "")
	f.Fuzz(func(t *testing.T, name, image, disk, args string) {
		p := Profile{Name: name, Image: image, Disk: disk, KernelArgs: args}
		p.Default()
		if p.Validate() != nil {
			return
		}
		if _, err := ParseDiskRule(p.Disk); err != nil {
			t.Fatalf("Validate accepted disk rule %q: %v", p.Disk, err)
		}
	})
}

func TestDefaults(t *testing.T) {
	p := Profile{Name: "a", Image: "i"}
	if err := p.Validate(); err == nil {
		t.Error("a profile without a disk rule validated before Default")
	}
	p.Default()
	if p.Disk != DefaultDisk || p.Validate() != nil {
		t.Errorf("after Default: disk %q, %v", p.Disk, p.Validate())
	}
	p = Profile{Disk: "first:8GiB"}
	p.Default()
	if p.Disk != "first:8GiB" {
		t.Errorf("Default replaced a disk rule: %q", p.Disk)
	}
	r := VMRequest{}
	r.Default()
	if r.VCPUs != DefaultVCPUs || r.MemoryMB != DefaultMemoryMB {
		t.Errorf("VMRequest defaults: %+v", r)
	}
	r = VMRequest{VCPUs: 3, MemoryMB: 1024}
	r.Default()
	if r.VCPUs != 3 || r.MemoryMB != 1024 {
		t.Errorf("Default replaced a size: %+v", r)
	}
	b := BMC{}
	b.Default()
	if b.Protocol != BMCRedfish {
		t.Errorf("BMC default protocol %q", b.Protocol)
	}
	b = BMC{Protocol: BMCIPMI}
	b.Default()
	if b.Protocol != BMCIPMI {
		t.Errorf("Default replaced the protocol: %q", b.Protocol)
	}
}
