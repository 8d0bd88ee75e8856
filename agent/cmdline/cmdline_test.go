package cmdline

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		want    Config
		wantErr bool
	}{
		{
			name: "as the iPXE script writes it",
			in:   "initrd=initramfs loom.fabric=http://10.77.0.1:8080 loom.token=ABC loom.bootmac=52:54:00:4C:00:01 console=ttyS0,115200 panic=-1\n",
			want: Config{Fabric: "http://10.77.0.1:8080", Token: "ABC", BootMAC: "52:54:00:4c:00:01"},
		},
		{
			name: "quoted value and tabs",
			in:   "quiet\tloom.fabric=\"https://fabric.example:8443\" loom.token=T",
			want: Config{Fabric: "https://fabric.example:8443", Token: "T"},
		},
		{name: "missing fabric", in: "loom.token=T", wantErr: true},
		{name: "no token (the seed has it)", in: "loom.fabric=http://a:1", want: Config{Fabric: "http://a:1"}},
		{name: "fabric not a URL", in: "loom.fabric=10.0.0.1 loom.token=T", wantErr: true},
		{name: "bad boot MAC", in: "loom.fabric=http://a:1 loom.token=T loom.bootmac=zz", wantErr: true},
		{name: "host offering vCPUs", in: "loom.fabric=http://a:1 loom.token=T loom.vcpus=6", want: Config{Fabric: "http://a:1", Token: "T", VCPUs: 6}},
		{name: "vcpus not a number", in: "loom.fabric=http://a:1 loom.token=T loom.vcpus=many", wantErr: true},
		{name: "vcpus zero", in: "loom.fabric=http://a:1 loom.token=T loom.vcpus=0", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Parse(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add("loom.fabric=http://10.0.0.1:8080 loom.token=X loom.bootmac=52:54:00:00:00:01")
	f.Add("a=\"b c\" loom.fabric=\"")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err == nil && (c.Fabric == "" || c.Token == "") {
			t.Errorf("Parse(%q) = %+v without error but incomplete", s, c)
		}
	})
}

func TestRead(t *testing.T) {
	if got, err := Read("loom.fabric=http://x"); err != nil || got != "loom.fabric=http://x" {
		t.Errorf("Read(given) = %q, %v", got, err)
	}
	if _, err := os.Stat("/proc/cmdline"); err == nil {
		if got, err := Read(""); err != nil || got == "" {
			t.Errorf("Read(\"\") = %q, %v; want /proc/cmdline", got, err)
		}
	}
}
