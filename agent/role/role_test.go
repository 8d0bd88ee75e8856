package role

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type entry struct {
	name, body string
	typ        byte
}

func pack(t *testing.T, gz bool, entries ...entry) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Mode: 0o755, Size: int64(len(e.body)), Typeflag: typ}
		if typ == tar.TypeSymlink {
			h.Size, h.Linkname = 0, "/etc/passwd"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	data := buf.Bytes()
	if gz {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(data)
		zw.Close()
		data = z.Bytes()
	}
	p := filepath.Join(t.TempDir(), "pkg.tar")
	if err := os.WriteFile(p, append(data, make([]byte, 4096)...), 0o644); err != nil { // padded, as stored
		t.Fatal(err)
	}
	return p
}

func TestExtract(t *testing.T) {
	for _, gz := range []bool{false, true} {
		p := pack(t, gz, entry{name: "loom-role.json", body: `{"name":"web","exec":"bin/web","port":8080,"health":"/healthz"}`}, entry{name: "bin/web", body: "#!/bin/sh\n"})
		dir := t.TempDir()
		s, err := Extract(p, dir)
		if err != nil {
			t.Fatal(err)
		}
		if s.Name != "web" || s.Port != 8080 || s.Exec != "bin/web" {
			t.Errorf("spec = %+v", s)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "bin/web")); err != nil || string(b) != "#!/bin/sh\n" {
			t.Errorf("bin/web = %q, %v", b, err)
		}
	}
}

func TestBadPackages(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"no spec", []entry{{name: "web", body: "x"}}, "no loom-role.json"},
		{"bad field", []entry{{name: "loom-role.json", body: `{"name":"web","exec":"/bin/sh","port":70000}`}}, `exec: "/bin/sh"`},
		{"port", []entry{{name: "loom-role.json", body: `{"name":"web","exec":"w","port":70000}`}}, "port: 70000"},
		{"health without port", []entry{{name: "loom-role.json", body: `{"name":"w","exec":"w","health":"/h"}`}}, "health:"},
		{"unknown field", []entry{{name: "loom-role.json", body: `{"name":"w","exec":"w","sudo":true}`}}, `unknown field "sudo"`},
		{"escape", []entry{{name: "loom-role.json", body: `{"name":"w","exec":"w"}`}, {name: "../../etc/cron", body: "x"}}, "leaves the package"},
		{"symlink", []entry{{name: "loom-role.json", body: `{"name":"w","exec":"w"}`}, {name: "w", typ: tar.TypeSymlink}}, "only files and directories"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Extract(pack(t, false, tt.entries...), dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Extract = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
