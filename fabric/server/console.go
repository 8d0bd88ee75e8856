package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Console logs: where something records each server's serial console (a
// console server, the BMCs' serial-over-LAN, the lab's QEMU) as one file
// per machine named by a MAC of it, lower case ("52:54:00:4c:00:01.log"),
// GET /v1/nodes/{id}/console?lines=N answers the last N lines (default
// 50, at most 1,000) as plain text, terminal control sequences removed.

// maxConsoleTail bounds how much of a log's end is read.
const maxConsoleTail = 256 << 10

func (a *apiServer) console(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	lines := 50
	if s := r.URL.Query().Get("lines"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			a.fail(w, r, http.StatusBadRequest, "lines=%q: want 1 to 1000", s)
			return
		}
		lines = n
	}
	n, ok := a.node(w, r, id)
	if !ok {
		return
	}
	macs := []string{n.MAC}
	if n.Inventory != nil {
		for _, nic := range n.Inventory.NICs {
			macs = append(macs, nic.MAC)
		}
	}
	for _, mac := range macs {
		if mac == "" || strings.ContainsAny(mac, `/\`) || strings.Contains(mac, "..") {
			continue
		}
		text, err := tail(filepath.Join(a.cfg.ConsoleDir, strings.ToLower(mac)+".log"), lines)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			a.fail(w, r, http.StatusInternalServerError, "console of %s: %v", id, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, text) // a client gone mid-body is not ours to report
		return
	}
	a.fail(w, r, http.StatusNotFound, "no console log for node %s (none named by its MACs in loomd's --console-dir)", id)
}

// terminal matches what a serial console carries besides text: escape
// sequences (CSI, OSC, two-byte) and control characters but tab and
// newline.
var terminal = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]`)

// tail is the last n lines of the file at path, as text.
func tail(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }() // read only
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	off := max(0, fi.Size()-maxConsoleTail)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return "", err
	}
	text := strings.ReplaceAll(string(b), "\r\n", "\n")
	text = strings.ToValidUTF8(terminal.ReplaceAllString(text, ""), "�")
	ls := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if off > 0 && len(ls) > 1 {
		ls = ls[1:] // the first is cut
	}
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n") + "\n", nil
}
