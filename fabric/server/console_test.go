package server

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
)

// TestConsole: a node's console log is found by any of its MACs, its last
// lines come back as text without the terminal's escape sequences, and a
// node without one, a missing node, a bad lines= or no token each get a
// clear answer.
func TestConsole(t *testing.T) {
	dir := t.TempDir()
	srv, _ := newAPIWith(t, func(c *Config, _ *node.Registry) { c.ConsoleDir = dir })
	var r api.RegisterResponse
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, regBody, &r); code != 200 {
		t.Fatalf("register: %d", code)
	}
	get := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	path := "/v1/nodes/" + r.NodeID + "/console"
	if code, body := get(path, opToken); code != 404 || !strings.Contains(body, "--console-dir") {
		t.Errorf("no log yet: %d %s", code, body)
	}
	// The log is named by the second NIC's MAC.
	var log strings.Builder
	log.WriteString("\x1b[2J\x1b[0;37;40miPXE 1.21\r\n")
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&log, "line %d \x1b[1mbold\x1b[0m\x07\r\n", i)
	}
	if err := os.WriteFile(filepath.Join(dir, "52:54:00:aa:00:02.log"), []byte(log.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	code, body := get(path+"?lines=3", opToken)
	if want := "line 98 bold\nline 99 bold\nline 100 bold\n"; code != 200 || body != want {
		t.Errorf("last 3 lines: %d %q, want %q", code, body, want)
	}
	if _, body := get(path, opToken); strings.Count(body, "\n") != 50 || strings.Contains(body, "\x1b") {
		t.Errorf("default: %d lines, escapes left: %v", strings.Count(body, "\n"), strings.Contains(body, "\x1b"))
	}
	for _, q := range []string{"?lines=0", "?lines=1001", "?lines=x"} {
		if code, body := get(path+q, opToken); code != 400 || !strings.Contains(body, "lines=") {
			t.Errorf("%s: %d %s", q, code, body)
		}
	}
	if code, _ := get(path, ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, body := get("/v1/nodes/n-nope/console", opToken); code != 404 || !strings.Contains(body, "not found") {
		t.Errorf("missing node: %d %s", code, body)
	}

	// A long log: only its end is read, its first (cut) line dropped.
	big := strings.Repeat(strings.Repeat("x", 99)+"\n", 5000) + "last\n"
	p := filepath.Join(dir, "big.log")
	if err := os.WriteFile(p, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	text, err := tail(p, 1000)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(ls) != 1000 || ls[999] != "last" || len(ls[0]) != 99 {
		t.Errorf("tail of a long log: %d lines, last %q, first %d bytes", len(ls), ls[len(ls)-1], len(ls[0]))
	}
}
