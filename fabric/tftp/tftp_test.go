package tftp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loomfabric/loom/scripts/vmtest"
)

// serve starts a server on 127.0.0.1 over dir.
func serve(t *testing.T, dir string, cfg Config) *Server {
	t.Helper()
	cfg.Dir, cfg.Addr = dir, "127.0.0.1:0"
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	})
	return s
}

// files makes a directory with a few files and returns it.
func files(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	big := make([]byte, 300_000)
	rand.Read(big)
	exact := make([]byte, 1468*4) // a multiple of the block size: ends with an empty block
	rand.Read(exact)
	want := map[string][]byte{"ipxe.efi": big, "exact.bin": exact, "empty": nil, "sub/undionly.kpxe": big[:70_000], "text.txt": []byte("one\ntwo\rthree\n")}
	for name, b := range want {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, want
}

func request(name, mode string, opts ...string) []byte {
	b := []byte{0, opRRQ}
	for _, f := range append([]string{name, mode}, opts...) {
		b = append(append(b, f...), 0)
	}
	return b
}

// client is a minimal TFTP client for the tests: it can drop the first
// ACK of chosen blocks to make the server resend.
type client struct {
	t      *testing.T
	c      *net.UDPConn
	server net.Addr
	dropAt map[uint16]bool
}

func newClient(t *testing.T, s *Server) *client {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, server: s.Addr(), dropAt: map[uint16]bool{}}
}

// get fetches a file; it returns the data, the OACK options and the
// server's error, if any.
func (cl *client) get(req []byte, blksize, window int) ([]byte, map[string]string, string) {
	cl.c.WriteTo(req, cl.server)
	var data []byte
	var oackOpts map[string]string
	var tid net.Addr
	next, winStart, winLen := uint16(1), uint16(1), 0
	buf := make([]byte, 70000)
	inWindow := 0
	for {
		cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := cl.c.ReadFrom(buf)
		if err != nil {
			cl.t.Fatalf("client: %v (got %d bytes so far)", err, len(data))
		}
		if tid == nil {
			tid = from
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case opERROR:
			return nil, nil, string(bytes.TrimRight(p[4:], "\x00"))
		case opOACK:
			oackOpts = map[string]string{}
			f := bytes.Split(bytes.TrimSuffix(p[2:], []byte{0}), []byte{0})
			for i := 0; i+1 < len(f); i += 2 {
				oackOpts[string(f[i])] = string(f[i+1])
			}
			cl.c.WriteTo([]byte{0, opACK, 0, 0}, tid)
		case opDATA:
			blk := binary.BigEndian.Uint16(p[2:])
			if blk != next {
				continue // out of order: wait for the resend
			}
			data = append(data, p[4:]...)
			inWindow++
			next++
			final := len(p)-4 < blksize
			if inWindow < window && !final {
				continue
			}
			inWindow = 0
			if cl.dropAt[blk] { // lose this ACK: the server must resend the window
				delete(cl.dropAt, blk)
				next, data = winStart, data[:winLen]
				continue
			}
			cl.c.WriteTo([]byte{0, opACK, byte(blk >> 8), byte(blk)}, tid)
			winStart, winLen = next, len(data)
			if final {
				return data, oackOpts, ""
			}
		}
	}
}

func TestTransfers(t *testing.T) {
	t.Parallel()
	dir, want := files(t)
	s := serve(t, dir, Config{Timeout: 200 * time.Millisecond})
	for _, tc := range []struct {
		name         string
		req          []byte
		blk, window  int
		file         string
		wantOACK     map[string]string
		drop         []uint16
		wantContents []byte
	}{
		{name: "plain 512-byte blocks", req: request("ipxe.efi", "octet"), blk: 512, window: 1, file: "ipxe.efi"},
		{name: "blksize 1468, tsize", req: request("ipxe.efi", "octet", "blksize", "1468", "tsize", "0"), blk: 1468, window: 1, file: "ipxe.efi",
			wantOACK: map[string]string{"blksize": "1468", "tsize": "300000"}},
		{name: "windowsize 16", req: request("ipxe.efi", "OCTET", "BlkSize", "1468", "windowsize", "16"), blk: 1468, window: 16, file: "ipxe.efi",
			wantOACK: map[string]string{"blksize": "1468", "windowsize": "16"}},
		{name: "blksize above the cap is clamped", req: request("ipxe.efi", "octet", "blksize", "65464"), blk: 1468, window: 1, file: "ipxe.efi",
			wantOACK: map[string]string{"blksize": "1468"}},
		{name: "unknown and bad options ignored", req: request("ipxe.efi", "octet", "multicast", "", "blksize", "7", "timeout", "0"), blk: 512, window: 1, file: "ipxe.efi"},
		{name: "timeout option", req: request("ipxe.efi", "octet", "timeout", "3"), blk: 512, window: 1, file: "ipxe.efi", wantOACK: map[string]string{"timeout": "3"}},
		{name: "a multiple of the block size", req: request("exact.bin", "octet", "blksize", "1468"), blk: 1468, window: 1, file: "exact.bin", wantOACK: map[string]string{"blksize": "1468"}},
		{name: "empty file", req: request("empty", "octet"), blk: 512, window: 1, file: "empty"},
		{name: "leading slash and subdirectory", req: request("/sub/undionly.kpxe", "octet"), blk: 512, window: 1, file: "sub/undionly.kpxe"},
		{name: "backslashes", req: request("sub\\undionly.kpxe", "octet"), blk: 512, window: 1, file: "sub/undionly.kpxe"},
		{name: "lost ACKs are recovered", req: request("ipxe.efi", "octet", "blksize", "1468", "windowsize", "4"), blk: 1468, window: 4, file: "ipxe.efi",
			wantOACK: map[string]string{"blksize": "1468", "windowsize": "4"}, drop: []uint16{4, 40, 100}},
		{name: "netascii", req: request("text.txt", "netascii"), blk: 512, window: 1, wantContents: []byte("one\r\ntwo\r\x00three\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cl := newClient(t, s)
			for _, b := range tc.drop {
				cl.dropAt[b] = true
			}
			got, opts, errMsg := cl.get(tc.req, tc.blk, tc.window)
			if errMsg != "" {
				t.Fatalf("server error %q", errMsg)
			}
			w := tc.wantContents
			if tc.file != "" {
				w = want[tc.file]
			}
			if !bytes.Equal(got, w) {
				t.Errorf("got %d bytes, want %d (equal: %v)", len(got), len(w), bytes.Equal(got, w))
			}
			if diff := cmp.Diff(tc.wantOACK, opts); diff != "" {
				t.Errorf("OACK (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	dir, _ := files(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "link-out"))
	os.Symlink("/etc/passwd", filepath.Join(dir, "passwd"))
	s := serve(t, dir, Config{Timeout: 200 * time.Millisecond})
	t.Run("each", func(t *testing.T) { refusals(t, s, filepath.Base(outside)) })
	if s.Malformed.Load() != 4 {
		t.Errorf("Malformed = %d, want the 4 malformed requests counted", s.Malformed.Load())
	}
}

func refusals(t *testing.T, s *Server, outside string) {
	for _, tc := range []struct {
		name string
		req  []byte
		want string
	}{
		{"dot-dot", request("../"+outside+"/secret", "octet"), "access violation"},
		{"dot-dot inside", request("sub/../../etc/passwd", "octet"), "access violation"},
		{"absolute path outside", request("/etc/passwd", "octet"), "file not found"},
		{"symlink out", request("link-out", "octet"), "access violation"},
		{"symlink to /etc", request("passwd", "octet"), "access violation"},
		{"a directory", request("sub", "octet"), "access violation"},
		{"missing", request("nosuch.efi", "octet"), "file not found"},
		{"write request", append([]byte{0, opWRQ}, "x\x00octet\x00"...), "read-only server"},
		{"mail mode", request("ipxe.efi", "mail"), `transfer mode "mail": want octet or netascii`},
		{"not NUL-terminated", []byte("\x00\x01ipxe.efi\x00octet"), "request not NUL-terminated"},
		{"an ACK to the listener", []byte{0, opACK, 0, 1}, "opcode 4 is not a request"},
		{"one byte", []byte{1}, "packet shorter than an opcode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, errMsg := newClient(t, s).get(tc.req, 512, 1)
			if errMsg != tc.want {
				t.Errorf("server said %q, want %q", errMsg, tc.want)
			}
		})
	}
}

// TestRealClients fetches with Debian's tftp-hpa and atftp clients, with
// and without blksize, and checks traversal is refused to them too.
func TestRealClients(t *testing.T) {
	t.Parallel()
	dir, want := files(t)
	s := serve(t, dir, Config{})
	port := fmt.Sprint(s.Addr().(*net.UDPAddr).Port)
	type run struct {
		name string
		args []string
		ok   bool
	}
	var runs []run
	if _, err := exec.LookPath("tftp"); err == nil {
		runs = append(runs,
			run{"tftp-hpa", []string{"tftp", "-m", "binary", "127.0.0.1", port, "-c", "get", "ipxe.efi", "OUT"}, true},
			run{"tftp-hpa leading slash", []string{"tftp", "-m", "binary", "127.0.0.1", port, "-c", "get", "/sub/undionly.kpxe", "OUT"}, true},
			run{"tftp-hpa traversal", []string{"tftp", "-m", "binary", "127.0.0.1", port, "-c", "get", "../../../../etc/passwd", "OUT"}, false},
		)
	}
	if _, err := exec.LookPath("atftp"); err == nil {
		runs = append(runs,
			run{"atftp", []string{"atftp", "-g", "-r", "ipxe.efi", "-l", "OUT", "127.0.0.1", port}, true},
			run{"atftp blksize 1468 tsize", []string{"atftp", "--option", "blksize 1468", "--option", "tsize 0", "-g", "-r", "ipxe.efi", "-l", "OUT", "127.0.0.1", port}, true},
			run{"atftp traversal", []string{"atftp", "-g", "-r", "/../etc/passwd", "-l", "OUT", "127.0.0.1", port}, false},
		)
	}
	vmtest.RequireTools(t, "make deps installs tftp-hpa and atftp", "tftp", "atftp")
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			args := append([]string(nil), r.args...)
			for i := range args {
				if args[i] == "OUT" {
					args[i] = out
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			msg, _ := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
			got, _ := os.ReadFile(out)
			w := want["ipxe.efi"]
			if strings.Contains(strings.Join(args, " "), "undionly") {
				w = want["sub/undionly.kpxe"]
			}
			if r.ok && !bytes.Equal(got, w) {
				t.Errorf("%s: got %d bytes, want %d; output: %s", strings.Join(args, " "), len(got), len(w), msg)
			}
			if !r.ok && len(got) > 0 {
				t.Errorf("%s: a traversal got %d bytes", strings.Join(args, " "), len(got))
			}
		})
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add(request("ipxe.efi", "octet", "blksize", "1468", "tsize", "0", "windowsize", "16"))
	f.Add([]byte("\x00\x02x\x00netascii\x00"))
	f.Add([]byte("\x00\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		if r.Filename == "" || (r.Mode != "octet" && r.Mode != "netascii") {
			t.Fatalf("ParseRequest accepted %q as %+v", b, r)
		}
		o := negotiate(r.Options, 1<<20, 1468)
		if o.blockSize < minBlockSize || o.blockSize > 1468 || o.windowSize < 1 || o.windowSize > maxWindowSize {
			t.Fatalf("negotiate(%v) = %+v: out of bounds", r.Options, o)
		}
	})
}
