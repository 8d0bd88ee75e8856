package netboot

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/node"
)

func TestScriptAndFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(dir, "initramfs.cpio.xz"), []byte("initrd"), 0o644)
	h, err := New(Config{BootDir: dir, BaseURL: "http://10.0.0.1:8080/", EnrollToken: "TOK", MAC: node.NormalizeMAC}, nil)
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
		"loom.fabric=http://10.0.0.1:8080 loom.token=TOK loom.bootmac=52:54:00:aa:bb:01 console=tty0 console=ttyS0,115200 panic=-1",
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
	if _, body := get("/boot/initramfs"); body != "initrd" {
		t.Errorf("initramfs body = %q", body)
	}
}

func TestFirstStageOverHTTP(t *testing.T) {
	dir, fs := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(dir, "initramfs.cpio.xz"), []byte("initrd"), 0o644)
	os.WriteFile(filepath.Join(fs, "ipxe.efi"), []byte("MZ-efi"), 0o644)
	os.WriteFile(filepath.Join(fs, "secret"), []byte("no"), 0o644)
	h, err := New(Config{BootDir: dir, FirstStageDir: fs, BaseURL: "http://10.0.0.1:8080", EnrollToken: "TOK", MAC: node.NormalizeMAC}, nil)
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
	_, err := New(Config{BootDir: t.TempDir(), BaseURL: "http://x", EnrollToken: "t", MAC: node.NormalizeMAC}, nil)
	if err == nil || !strings.Contains(err.Error(), "make initramfs") {
		t.Errorf("New without boot files = %v, want an error pointing at 'make initramfs'", err)
	}
}
