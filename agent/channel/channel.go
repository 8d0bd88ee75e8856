// Package channel is the VMBus-like link between a host agent and a guest:
// the guest's only route to the outside world.
//
// # Protocol (version 1)
//
// The transport is one virtio-serial port ("org.loom.channel.0"): a unix
// socket on the host, /dev/vportNpM in the guest. On it runs one yamux
// session (github.com/hashicorp/yamux); the guest is the yamux client, the
// host the server. Every stream begins with an open request from the side
// that opened it and an answer from the other side, each one frame:
//
//	frame  = length(uint32, big endian, ≤ MaxFrame) JSON
//	open   = {"service": NAME, "version": 1}
//	answer = {"ok": true} | {"ok": false, "error": "…"}
//
// after which the stream carries what the service defines. The first
// stream a guest opens is "hello" (both sides exchange a Hello frame and
// close it); a peer speaking another major version is refused there.
//
// The host is the policy point: a guest may open only the services the
// host offers (Host.Services); anything else is answered
// {"ok":false,"error":"service X not offered"}, closed and logged. The host
// opens streams towards the guest for the services the guest serves
// (ingress connections for web roles, later).
//
// Services the host offers a guest (version 1):
//
//	control   both ways, frames of Message: the guest sends "interfaces",
//	          "health" and "log"; the host sends "shutdown" (stop the
//	          role and power off)
//	goal      the host sends one GuestGoal frame and closes
//	package   the host sends a PackageHeader frame, then exactly Size raw
//	          bytes whose sha256 is Digest, and closes
//	queue     the guest's service's message queues: the guest sends
//	          QueueCall frames, the host answers each with a QueueAnswer
//	          (the host calls the fabric on the guest's behalf; the guest
//	          cannot name another service)
//
// and the guest serves the host:
//
//	ingress   one TCP connection to the role's port inside the guest:
//	          raw bytes both ways after the answer
package channel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Version is the protocol's major version.
const Version = 1

// MaxFrame bounds one frame.
const MaxFrame = 1 << 20

// ErrRefused means the peer refused to open a stream.
var ErrRefused = errors.New("refused")

// Open is the first frame on a stream, from its opener.
type Open struct {
	Service string `json:"service"`
	Version int    `json:"version"`
}

// Answer is the reply to Open.
type Answer struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Hello is what each side says on the "hello" stream.
type Hello struct {
	Version  int    `json:"version"`
	Side     string `json:"side"` // "host" or "guest"
	Instance string `json:"instance,omitempty"`
	Agent    string `json:"agent,omitempty"`
	// The host's hello also carries its clock (Unix nanoseconds) and fresh
	// random bytes: a guest resumed from a saved state steps its clock to
	// the host's and mixes them into its kernel's random pool, so no two
	// guests of one state share either.
	Time    int64  `json:"time,omitempty"`
	Entropy []byte `json:"entropy,omitempty"`
}

// EntropyBytes is how many random bytes the host's hello carries.
const EntropyBytes = 64

// Message is a control message.
type Message struct {
	Type string `json:"type"` // "health", "interfaces", "log", "goal"
	// Health: the guest agent's state ("starting", "ready", "failed").
	State string `json:"state,omitempty"`
	// Interfaces: the network interfaces the guest sees.
	Interfaces []string `json:"interfaces,omitempty"`
	// Log: one line.
	Line string `json:"line,omitempty"`
}

// GuestGoal is what the guest is to run.
type GuestGoal struct {
	Instance string            `json:"instance"`
	Package  string            `json:"package"`
	Digest   string            `json:"digest"`
	Settings map[string]string `json:"settings,omitempty"`
	// Health, when set, replaces the package's health check.
	Health *HealthProbe `json:"health,omitempty"`
}

// HealthProbe is how the guest agent checks its role: GET Path on the
// role's port every Interval, answered 2xx within Timeout (durations such
// as "2s"); Failures in a row make the role unhealthy.
type HealthProbe struct {
	Path     string `json:"path"`
	Interval string `json:"interval,omitempty"`
	Timeout  string `json:"timeout,omitempty"`
	Failures int    `json:"failures,omitempty"`
}

// PackageHeader precedes a role package on the "package" stream.
type PackageHeader struct {
	Size   int64  `json:"size"`
	Digest string `json:"digest"`
}

// QueueCall is one queue operation on the "queue" stream: put (Body),
// get (Visibility, a duration such as "30s"; default 30s), delete (ID
// and the Receipt of its latest delivery) or peek (up to Max messages
// from the front, 1 to 32, left where they are).
type QueueCall struct {
	Op         string `json:"op"`
	Queue      string `json:"queue"`
	Body       []byte `json:"body,omitempty"`
	Visibility string `json:"visibility,omitempty"`
	ID         string `json:"id,omitempty"`
	Receipt    string `json:"receipt,omitempty"`
	Max        int    `json:"max,omitempty"`
}

// QueueAnswer answers a QueueCall. Code is HTTP's: 200, or 400 (bad
// call), 403 (not an instance), 404 (no such message), 409 (the receipt
// is stale: delivered again since), 429 (queue full), 502 (the fabric is
// out of reach); Error says why.
type QueueAnswer struct {
	Code     int            `json:"code"`
	Error    string         `json:"error,omitempty"`
	ID       string         `json:"id,omitempty"`       // a put's
	Message  *QueueMessage  `json:"message,omitempty"`  // a get's; nil: none visible
	Messages []QueueMessage `json:"messages,omitempty"` // a peek's (no receipts)
	Length   int            `json:"length,omitempty"`   // a peek's: messages in the queue
}

// QueueMessage is a delivered (or peeked) message.
type QueueMessage struct {
	ID         string    `json:"id"`
	Body       []byte    `json:"body"`
	Enqueued   time.Time `json:"enqueued"`
	Deliveries int       `json:"deliveries"`
	Receipt    string    `json:"receipt"`
}

// WriteFrame writes v as one frame.
func WriteFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > MaxFrame {
		return fmt.Errorf("channel: frame of %d bytes exceeds %d", len(b), MaxFrame)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// ReadFrame reads one frame into v. A frame over MaxFrame, a short frame
// or bad JSON is an error; nothing is allocated beyond the declared length
// up to MaxFrame.
func ReadFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return fmt.Errorf("channel: frame of %d bytes exceeds %d", n, MaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("channel: short frame: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("channel: bad frame: %w", err)
	}
	return nil
}
