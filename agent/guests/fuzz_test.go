package guests

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/loomfabric/loom/agent/channel"
)

// The host end of a guest's control stream takes whatever the guest
// writes: malformed frames end the stream, never the host agent.
func FuzzControl(f *testing.F) {
	frame := func(m channel.Message) []byte {
		c1, c2 := net.Pipe()
		go func() { channel.WriteFrame(c1, m); c1.Close() }()
		b := make([]byte, 4096)
		n, _ := c2.Read(b)
		return b[:n]
	}
	f.Add(frame(channel.Message{Type: "health", State: "ready"}))
	f.Add(frame(channel.Message{Type: "interfaces", Interfaces: []string{"lo"}}))
	f.Add(frame(channel.Message{Type: "log", Line: "x"}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := New(Config{Dir: t.TempDir()})
		g := s.newGuest("fuzz")
		host, guest := net.Pipe()
		done := make(chan struct{})
		go func() { g.control(context.Background(), host); close(done) }()
		guest.SetWriteDeadline(time.Now().Add(time.Second))
		guest.Write(data)
		guest.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the control handler hung on a closed stream")
		}
		st, _ := g.status()
		if len(st.Interfaces) > 64 || len(st.Reason) > 1024 {
			t.Errorf("a guest made the host report %d interfaces and a %d-byte reason", len(st.Interfaces), len(st.Reason))
		}
	})
}
