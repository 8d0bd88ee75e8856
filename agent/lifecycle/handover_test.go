package lifecycle

import "testing"

func TestHostCmdline(t *testing.T) {
	for _, tc := range []struct{ in, extra, want string }{
		{
			in:    "initrd=initramfs loom.fabric=http://10.77.0.1:8080 loom.token=T loom.bootmac=52:54:00:4c:00:01 console=tty0 console=ttyS0,115200 panic=-1 loom.boot=host\n",
			extra: "quiet",
			want:  "loom.fabric=http://10.77.0.1:8080 loom.bootmac=52:54:00:4c:00:01 console=tty0 console=ttyS0,115200 panic=-1 loom.mode=host quiet",
		},
		{in: "ro loom.mode=maintenance", want: "ro loom.mode=host"},
	} {
		if got := hostCmdline(tc.in, tc.extra); got != tc.want {
			t.Errorf("hostCmdline(%q, %q) =\n %q, want\n %q", tc.in, tc.extra, got, tc.want)
		}
	}
}
