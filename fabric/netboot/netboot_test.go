package netboot

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/loomfabric/loom/agent/seed"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
)

func TestScriptAndFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(dir, "initramfs.cpio.xz"), []byte("initrd"), 0o644)
	h, err := New(Config{BootDir: dir, BaseURL: "http://10.0.0.1:8080/", EnrollToken: "TOK", CA: testCA, MAC: node.NormalizeMAC}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /boot/{file}", h)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	code, body := get("/boot/52:54:00:AA:BB:01.ipxe")
	if code != 200 || !strings.HasPrefix(body, "#!ipxe\n") {
		t.Fatalf("script = %d %q", code, body)
	}
	for _, want := range []string{
		"kernel http://10.0.0.1:8080/boot/vmlinuz ",
		"loom.fabric=http://10.0.0.1:8080 loom.bootmac=52:54:00:aa:bb:01 console=tty0 console=ttyS0,115200 panic=-1",
		"initrd --name initramfs http://10.0.0.1:8080/boot/initramfs",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("script lacks %q:\n%s", want, body)
		}
	}
	if got := h.ScriptURL("52:54:00:aa:bb:01"); got != "http://10.0.0.1:8080/boot/52:54:00:aa:bb:01.ipxe" {
		t.Errorf("ScriptURL = %q", got)
	}
	for path, want := range map[string]int{"/boot/vmlinuz": 200, "/boot/initramfs": 200, "/boot/nope.ipxe": 400, "/boot/etc": 404} {
		if code, _ := get(path); code != want {
			t.Errorf("GET %s = %d, want %d", path, code, want)
		}
	}
	if strings.Contains(body, "TOK") {
		t.Errorf("the script carries the enrollment token:\n%s", body)
	}
	// The initramfs, then zeros to a 4-byte boundary, then the seed: a
	// cpio archive with the CA and the token.
	_, body = get("/boot/initramfs")
	rest, ok := strings.CutPrefix(body, "initrd\x00\x00")
	if !ok {
		t.Fatalf("initramfs body starts %q, want the file padded to 4 bytes", body[:min(len(body), 16)])
	}
	files := map[string]string{}
	rr := cpio.Newc.Reader(strings.NewReader(rest))
	if err := cpio.ForEachRecord(rr, func(r cpio.Record) error {
		if r.ReaderAt != nil {
			b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			files[r.Name] = fmt.Sprintf("%o %s", r.Mode&0o777, b)
		}
		return nil
	}); err != nil {
		t.Fatalf("the seed is no cpio archive: %v", err)
	}
	if files[seed.CAFile] != "644 "+string(testCA) || files[seed.TokenFile] != "600 TOK\n" {
		t.Errorf("seed files = %q", files)
	}
	// Ranges (iPXE resumes) span the file and the seed.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/boot/initramfs", nil)
	req.Header.Set("Range", "bytes=4-11")
	mux.ServeHTTP(rec, req)
	if rec.Code != 206 || rec.Body.String() != body[4:12] {
		t.Errorf("range 4-11 = %d %q, want 206 %q", rec.Code, rec.Body.String(), body[4:12])
	}
}

var testCA = []byte("-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n")

func TestFirstStageOverHTTP(t *testing.T) {
	dir, fs := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(dir, "initramfs.cpio.xz"), []byte("initrd"), 0o644)
	os.WriteFile(filepath.Join(fs, "ipxe.efi"), []byte("MZ-efi"), 0o644)
	os.WriteFile(filepath.Join(fs, "secret"), []byte("no"), 0o644)
	h, err := New(Config{BootDir: dir, FirstStageDir: fs, BaseURL: "http://10.0.0.1:8080", EnrollToken: "TOK", CA: testCA, MAC: node.NormalizeMAC}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.FirstStageURL(); got != "http://10.0.0.1:8080/boot" {
		t.Errorf("FirstStageURL = %q", got)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /boot/{file}", h)
	for path, want := range map[string]string{"/boot/ipxe.efi": "200 MZ-efi", "/boot/snponly.efi": "404", "/boot/secret": "404", "/boot/..%2fsecret": "404"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		got := fmt.Sprint(rec.Code)
		if rec.Code == 200 {
			got += " " + rec.Body.String()
		}
		if got != want {
			t.Errorf("GET %s = %q, want %q", path, got, want)
		}
	}
}

func TestMissingBootFiles(t *testing.T) {
	_, err := New(Config{BootDir: t.TempDir(), BaseURL: "http://x", EnrollToken: "t", CA: testCA, MAC: node.NormalizeMAC}, nil)
	if err == nil || !strings.Contains(err.Error(), "make initramfs") {
		t.Errorf("New without boot files = %v, want an error pointing at 'make initramfs'", err)
	}
}

// TestBootChoices: the script follows what the node is to boot.
func TestBootChoices(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(dir, "initramfs.cpio.xz"), []byte("initrd"), 0o644)
	choices := map[string]api.BootChoice{
		"52:54:00:00:00:01": {Kind: api.BootKexec},
		"52:54:00:00:00:02": {Kind: api.BootLocal},
		"52:54:00:00:00:03": {Kind: api.BootCustom, Kernel: "http://10.0.0.9/k", Initrd: "http://10.0.0.9/i", Args: "root=/dev/vda1 ro"},
		"52:54:00:00:00:04": {Kind: api.BootCustom, Kernel: "https://10.0.0.9/k", Args: "root=/dev/vda1"},
	}
	h, err := New(Config{BootDir: dir, BaseURL: "http://10.0.0.1:8080", EnrollToken: "TOK", CA: testCA, MAC: node.NormalizeMAC,
		Boot: func(mac string) api.BootChoice {
			if c, ok := choices[mac]; ok {
				return c
			}
			return api.BootChoice{Kind: api.BootMaintenance}
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mac           string
		want, notWant []string
	}{
		{"52:54:00:00:00:00", []string{"kernel http://10.0.0.1:8080/boot/vmlinuz", "loom.bootmac=52:54:00:00:00:00"}, []string{"loom.boot=host", "exit"}},
		{"52:54:00:00:00:01", []string{"kernel http://10.0.0.1:8080/boot/vmlinuz", "panic=-1 loom.boot=host"}, []string{"exit"}},
		{"52:54:00:00:00:02", []string{"boots from its disk\nexit\n"}, []string{"kernel", "loom.token"}},
		{"52:54:00:00:00:03", []string{"kernel http://10.0.0.9/k initrd=initrd root=/dev/vda1 ro || goto retry\ninitrd --name initrd http://10.0.0.9/i || goto retry\nboot"}, []string{"loom.token", "/boot/vmlinuz"}},
		{"52:54:00:00:00:04", []string{"kernel https://10.0.0.9/k root=/dev/vda1 || goto retry\nboot"}, []string{"initrd", "loom.token"}},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/boot/"+tc.mac+".ipxe", nil)
		req.SetPathValue("file", tc.mac+".ipxe")
		h.ServeHTTP(rec, req)
		body := rec.Body.String()
		if !strings.HasPrefix(body, "#!ipxe\n") {
			t.Errorf("%s: not an iPXE script: %q", tc.mac, body)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: script lacks %q:\n%s", tc.mac, w, body)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(body, w) {
				t.Errorf("%s: script has %q:\n%s", tc.mac, w, body)
			}
		}
	}
}
