package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Opcodes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes (RFC 1350).
const (
	errUndefined   = 0
	errNotFound    = 1
	errAccess      = 2
	errIllegalOp   = 4
	errUnknownTID  = 5
	errOptionsDeny = 8 // RFC 2347
)

// Bounds of the negotiable options.
const (
	minBlockSize   = 8     // RFC 2348
	maxBlockSize   = 65464 // RFC 2348
	maxWindowSize  = 64    // RFC 7440 allows 65535; more buys nothing on a LAN
	maxTimeoutSecs = 255   // RFC 2349
)

// Request is a parsed read or write request.
type Request struct {
	Write    bool
	Filename string
	Mode     string
	// Options as sent, names lower-cased (RFC 2347: case-insensitive).
	Options map[string]string
}

// ParseRequest parses an RRQ or WRQ packet. Any malformed packet is an
// error, never a panic.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < 2 {
		return Request{}, errors.New("packet shorter than an opcode")
	}
	var r Request
	switch op := binary.BigEndian.Uint16(b); op {
	case opRRQ:
	case opWRQ:
		r.Write = true
	default:
		return Request{}, fmt.Errorf("opcode %d is not a request", op)
	}
	fields := bytes.Split(b[2:], []byte{0})
	// A well-formed request ends with a NUL, so the last field is empty.
	if len(fields) < 3 || len(fields[len(fields)-1]) != 0 {
		return Request{}, errors.New("request not NUL-terminated")
	}
	fields = fields[:len(fields)-1]
	r.Filename, r.Mode = string(fields[0]), strings.ToLower(string(fields[1]))
	if r.Filename == "" {
		return Request{}, errors.New("empty file name")
	}
	switch r.Mode {
	case "octet", "netascii":
	default:
		return Request{}, fmt.Errorf("transfer mode %q: want octet or netascii", r.Mode)
	}
	opts := fields[2:]
	if len(opts)%2 != 0 {
		return Request{}, errors.New("an option without a value")
	}
	for i := 0; i < len(opts); i += 2 {
		if r.Options == nil {
			r.Options = map[string]string{}
		}
		r.Options[strings.ToLower(string(opts[i]))] = string(opts[i+1])
	}
	return r, nil
}

// options is what a transfer was agreed to run with.
type options struct {
	blockSize  int
	windowSize int
	timeoutSec int
	// ack is what goes into the OACK, in a stable order; empty means no
	// OACK (the client asked for nothing we know).
	ack [][2]string
}

// negotiate picks what the server accepts of a request's options (RFC
// 2347: unknown options are ignored, out-of-range values are clamped or
// dropped); size is the file's size, for tsize.
func negotiate(o map[string]string, size int64, maxBlock int) options {
	got := options{blockSize: 512, windowSize: 1, timeoutSec: 0}
	if v, ok := num(o, "blksize", minBlockSize, 1<<30); ok {
		got.blockSize = min(v, maxBlockSize, maxBlock)
		got.ack = append(got.ack, [2]string{"blksize", strconv.Itoa(got.blockSize)})
	}
	if v, ok := num(o, "timeout", 1, maxTimeoutSecs); ok {
		got.timeoutSec = v
		got.ack = append(got.ack, [2]string{"timeout", strconv.Itoa(v)})
	}
	if _, ok := num(o, "tsize", 0, 1<<62); ok {
		got.ack = append(got.ack, [2]string{"tsize", strconv.FormatInt(size, 10)})
	}
	if v, ok := num(o, "windowsize", 1, 65535); ok {
		got.windowSize = min(v, maxWindowSize)
		got.ack = append(got.ack, [2]string{"windowsize", strconv.Itoa(got.windowSize)})
	}
	return got
}

func num(o map[string]string, name string, lo, hi int) (int, bool) {
	s, ok := o[name]
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		return 0, false
	}
	return v, true
}

func oack(opts [][2]string) []byte {
	b := []byte{0, opOACK}
	for _, kv := range opts {
		b = append(b, kv[0]...)
		b = append(b, 0)
		b = append(b, kv[1]...)
		b = append(b, 0)
	}
	return b
}

func errPacket(code uint16, msg string) []byte {
	b := []byte{0, opERROR, byte(code >> 8), byte(code)}
	return append(append(b, msg...), 0)
}

// parseAck returns the block number of an ACK, or an error for an ERROR
// packet from the client or anything else.
func parseAck(b []byte) (uint16, error) {
	if len(b) < 4 {
		return 0, errors.New("short packet")
	}
	switch binary.BigEndian.Uint16(b) {
	case opACK:
		return binary.BigEndian.Uint16(b[2:]), nil
	case opERROR:
		msg, _, _ := bytes.Cut(b[4:], []byte{0})
		return 0, fmt.Errorf("the client gave up: error %d %q", binary.BigEndian.Uint16(b[2:]), msg)
	}
	return 0, fmt.Errorf("opcode %d where an ACK belongs", binary.BigEndian.Uint16(b))
}
