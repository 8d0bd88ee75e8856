// Package tftp is loomd's read-only TFTP server (RFC 1350), for the first
// stage of a firmware network boot: a PXE ROM or UEFI firmware fetches the
// iPXE binary over TFTP, and iPXE fetches everything else over HTTP.
//
// It speaks the option extension (RFC 2347) with blksize (RFC 2348),
// tsize and timeout (RFC 2349) and windowsize (RFC 7440), in octet and
// netascii modes. Files come only from Dir, opened through an os.Root: no
// "..", no absolute path, no symlink leads out, and only regular files are
// served. Write requests are refused. Every transfer runs on a socket of
// its own (its TID) bound to the server's address, is retransmitted on
// timeout a bounded number of times, and is dropped after that. A packet
// that does not parse is counted and answered with an error, never a
// crash.
package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is a TFTP server.
type Config struct {
	// Dir is the directory served. Required.
	Dir string
	// Addr to listen on. Default ":69".
	Addr string
	// Conn replaces the listening socket (tests). Default: Addr.
	Conn net.PacketConn
	// ServerIP is the address transfers are sent from; firmware expects
	// the address it sent its request to. Default: the listener's address.
	ServerIP net.IP
	// Timeout before a window is sent again, unless the client asks for
	// its own (the timeout option). Default 1s.
	Timeout time.Duration
	// Retries of one window before a transfer is dropped. Default 5.
	Retries int
	// MaxBlockSize caps the blksize option (keep packets within the
	// path's MTU). Default 1468 (a 1500-byte Ethernet frame).
	MaxBlockSize int
	// MaxTransfers bounds concurrent transfers. Default 256.
	MaxTransfers int
}

// Server is a running TFTP server.
type Server struct {
	cfg  Config
	root *os.Root
	log  *slog.Logger
	conn net.PacketConn
	sem  chan struct{}
	wg   sync.WaitGroup

	// Malformed counts requests that did not parse; Sent counts files
	// sent whole.
	Malformed, Sent atomic.Int64
}

// New opens Dir and the listening socket.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dir == "" {
		return nil, errors.New("tftp: Dir is required")
	}
	root, err := os.OpenRoot(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("tftp: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.MaxBlockSize <= 0 {
		cfg.MaxBlockSize = 1468
	}
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = 256
	}
	conn := cfg.Conn
	if conn == nil {
		addr := cfg.Addr
		if addr == "" {
			addr = ":69"
		}
		if conn, err = net.ListenPacket("udp4", addr); err != nil {
			_ = root.Close() // read only; the listen error is the one to report
			return nil, fmt.Errorf("tftp: %w", err)
		}
	}
	if cfg.ServerIP == nil {
		if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsUnspecified() {
			cfg.ServerIP = a.IP
		}
	}
	return &Server{cfg: cfg, root: root, log: log, conn: conn, sem: make(chan struct{}, cfg.MaxTransfers)}, nil
}

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Serve answers requests until ctx ends, then waits for running transfers.
func (s *Server) Serve(ctx context.Context) error {
	go func() { <-ctx.Done(); s.conn.Close() }()
	defer func() { s.wg.Wait(); _ = s.root.Close() }() // read only
	buf := make([]byte, 2048)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tftp: %w", err)
		}
		req, err := ParseRequest(buf[:n])
		if err != nil {
			s.Malformed.Add(1)
			s.log.Debug("tftp: malformed request", "from", from, "err", err)
			sendError(s.conn, from, errIllegalOp, err.Error())
			continue
		}
		if req.Write {
			sendError(s.conn, from, errAccess, "read-only server")
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			sendError(s.conn, from, errUndefined, "server busy")
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() { <-s.sem; s.wg.Done() }()
			if err := s.send(ctx, req, from); err != nil {
				s.log.Warn("tftp: transfer failed", "file", req.Filename, "client", from, "err", err)
			}
		}()
	}
}

// open resolves a requested name inside Dir: "/x" and "x" are the same
// file, backslashes are separators (some firmware sends them), and no
// ".." component is accepted.
func (s *Server) open(name string) (*os.File, error) {
	name = strings.ReplaceAll(name, "\\", "/")
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return nil, fs.ErrPermission
		}
	}
	name = strings.TrimLeft(path.Clean("/"+name), "/")
	if name == "" {
		return nil, fs.ErrNotExist
	}
	f, err := s.root.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		_ = f.Close() // read only
		return nil, fs.ErrPermission
	}
	return f, nil
}

// send runs one read transfer from its own socket.
func (s *Server) send(ctx context.Context, req Request, client net.Addr) error {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: s.cfg.ServerIP})
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	f, err := s.open(req.Filename)
	if err != nil {
		code, msg := uint16(errNotFound), "file not found"
		if errors.Is(err, fs.ErrPermission) || !errors.Is(err, fs.ErrNotExist) {
			code, msg = errAccess, "access violation"
		}
		sendError(c, client, code, msg)
		return fmt.Errorf("%s: %w", msg, err)
	}
	defer func() { _ = f.Close() }() // read only
	var src io.ReaderAt = f
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if req.Mode == "netascii" {
		if size > 16<<20 {
			sendError(c, client, errUndefined, "netascii only for files up to 16 MiB")
			return errors.New("netascii transfer of a large file refused")
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		b = toNetascii(b)
		src, size = bytes.NewReader(b), int64(len(b))
	}
	o := negotiate(req.Options, size, s.cfg.MaxBlockSize)
	t := &transfer{c: c, client: client, src: src, size: size, o: o, timeout: s.cfg.Timeout, retries: s.cfg.Retries}
	if o.timeoutSec > 0 {
		t.timeout = time.Duration(o.timeoutSec) * time.Second
	}
	if err := t.run(); err != nil {
		return err
	}
	s.Sent.Add(1)
	s.log.Info("tftp: sent", "file", req.Filename, "client", client, "bytes", size, "blksize", o.blockSize, "windowsize", o.windowSize)
	return nil
}

// toNetascii turns LF into CR LF and a bare CR into CR NUL (RFC 764).
func toNetascii(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/16)
	for _, c := range b {
		switch c {
		case '\n':
			out = append(out, '\r', '\n')
		case '\r':
			out = append(out, '\r', 0)
		default:
			out = append(out, c)
		}
	}
	return out
}

type transfer struct {
	c       *net.UDPConn
	client  net.Addr
	src     io.ReaderAt
	size    int64
	o       options
	timeout time.Duration
	retries int
}

// run sends the OACK (if any options were agreed) and then the file in
// windows, each answered by an ACK of the last block received in order.
func (t *transfer) run() error {
	last := t.size/int64(t.o.blockSize) + 1 // the final block is shorter than blksize, maybe empty
	buf := make([]byte, 4+t.o.blockSize)
	in := make([]byte, 1024)
	var acked int64       // blocks the client has confirmed
	if len(t.o.ack) > 0 { // the OACK is "block 0": the client answers it with ACK 0
		p := oack(t.o.ack)
		sendOACK := func() error { _, err := t.c.WriteTo(p, t.client); return err }
		if err := sendOACK(); err != nil {
			return err
		}
		if _, err := t.awaitAck(in, -1, 0, sendOACK); err != nil {
			return fmt.Errorf("option acknowledgement: %w", err)
		}
	}
	for acked < last {
		end := min(acked+int64(t.o.windowSize), last)
		sendWindow := func() error {
			for n := acked + 1; n <= end; n++ {
				k, err := t.src.ReadAt(buf[4:], (n-1)*int64(t.o.blockSize))
				if err != nil && err != io.EOF {
					sendError(t.c, t.client, errUndefined, "read error")
					return err
				}
				binary.BigEndian.PutUint16(buf, opDATA)
				binary.BigEndian.PutUint16(buf[2:], uint16(n))
				if _, err := t.c.WriteTo(buf[:4+k], t.client); err != nil {
					return err
				}
			}
			return nil
		}
		if err := sendWindow(); err != nil {
			return err
		}
		got, err := t.awaitAck(in, acked, end, sendWindow)
		if err != nil {
			return fmt.Errorf("block %d of %d: %w", acked+1, last, err)
		}
		acked = got
	}
	return nil
}

// awaitAck waits for an ACK within (acked, end] and returns the highest
// block it confirms; a timeout resends the window. An ACK of an earlier
// block (a lost packet in the window) returns that block, so the next
// window starts right after it.
func (t *transfer) awaitAck(in []byte, acked, end int64, resend func() error) (int64, error) {
	for try := 0; ; try++ {
		deadline := time.Now().Add(t.timeout)
		for {
			b, err := t.read(in, deadline)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return 0, err
			}
			// Map the 16-bit block number onto the window (it wraps).
			for n := end; n > acked; n-- {
				if uint16(n) == b {
					return n, nil
				}
			}
		}
		if try >= t.retries {
			return 0, fmt.Errorf("no ACK after %d tries", try+1)
		}
		if err := resend(); err != nil {
			return 0, err
		}
	}
}

// read returns the next ACK's block from the client; packets from another
// address get "unknown transfer ID" and are otherwise ignored.
func (t *transfer) read(in []byte, deadline time.Time) (uint16, error) {
	for {
		if err := t.c.SetReadDeadline(deadline); err != nil {
			return 0, err
		}
		n, from, err := t.c.ReadFrom(in)
		if err != nil {
			return 0, err
		}
		if from.String() != t.client.String() {
			sendError(t.c, from, errUnknownTID, "unknown transfer ID")
			continue
		}
		b, err := parseAck(in[:n])
		if err != nil {
			if bytes.HasPrefix(in[:n], []byte{0, opERROR}) {
				return 0, err
			}
			continue // not an ACK: ignore, as RFC 1350 allows
		}
		return b, nil
	}
}

// sendError tells a client why its request or transfer ends. It is sent
// once and never acknowledged (RFC 1350): a client that misses it times
// out, so a failed send changes nothing.
func sendError(c net.PacketConn, to net.Addr, code uint16, msg string) {
	_, _ = c.WriteTo(errPacket(code, msg), to)
}
