package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"time"
)

// Console follows a serial console's log file as QEMU appends to it: each
// poll reads only what was added, and Expect waits for a marker in what
// the console has printed so far.
type Console struct {
	// Path is the log file (it may not exist yet).
	Path string
	// Exited, if set, says how the machine behind the console ended ("" while
	// it runs): Expect stops waiting at once when it does.
	Exited func() string
	// Poll is how often the file is checked for more (default 20ms).
	Poll time.Duration

	mu   sync.Mutex
	f    *os.File
	seen []byte
}

// NewConsole follows path.
func NewConsole(path string, exited func() string) *Console {
	return &Console{Path: path, Exited: exited}
}

// read takes in what was appended since the last read. A file truncated
// or made anew (a machine started again on the same log) is read from its
// start, as what it now says.
func (c *Console) read() {
	if c.f != nil {
		cur, err1 := c.f.Stat()
		now, err2 := os.Stat(c.Path)
		if err1 != nil || err2 != nil || !os.SameFile(cur, now) || now.Size() < int64(len(c.seen)) {
			_ = c.f.Close() // read-only; reopened below
			c.f, c.seen = nil, nil
		}
	}
	if c.f == nil {
		f, err := os.Open(c.Path)
		if err != nil {
			return // not created yet
		}
		c.f = f
	}
	for { // as io.ReadAll: straight into seen's spare room
		if len(c.seen) == cap(c.seen) {
			c.seen = append(c.seen, 0)[:len(c.seen)]
		}
		n, err := c.f.Read(c.seen[len(c.seen):cap(c.seen)])
		c.seen = c.seen[:len(c.seen)+n]
		if n == 0 || err != nil {
			return
		}
	}
}

// Text is everything the console has printed so far.
func (c *Console) Text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read()
	return string(c.seen)
}

// Has reports whether marker has been printed.
func (c *Console) Has(marker string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.read()
	return bytes.Contains(c.seen, []byte(marker))
}

// Expect waits up to within for marker on the console. Its error says
// whether time ran out or the machine ended first (and how).
func (c *Console) Expect(marker string, within time.Duration) error {
	return c.ExpectBy(marker, time.Now().Add(within))
}

// ExpectBy is Expect with a deadline: several markers can share one.
func (c *Console) ExpectBy(marker string, deadline time.Time) error {
	poll := c.Poll
	if poll == 0 {
		poll = 20 * time.Millisecond
	}
	for {
		if c.Has(marker) {
			return nil
		}
		if c.Exited != nil {
			if how := c.Exited(); how != "" {
				if c.Has(marker) { // printed just before the end
					return nil
				}
				return fmt.Errorf("waiting for %q on the console: %s", marker, how)
			}
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("the console lacks %q", marker)
		}
		time.Sleep(min(poll, time.Until(deadline)+time.Millisecond))
	}
}

// Close stops following the file.
func (c *Console) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}
