package guests

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// TestQueueService: the host's "queue" service calls the fabric for the
// guest whose channel it is (the guest cannot name another), passes the
// fabric's refusals on with their codes, and answers a bad frame with 400.
func TestQueueService(t *testing.T) {
	var asked []string
	s := New(Config{Dir: t.TempDir(), DiskBytesPerSec: -1, Queue: func(_ context.Context, vm string, req api.QueueRequest) (api.QueueReply, error) {
		asked = append(asked, vm+" "+string(req.Op)+" "+req.Queue)
		switch req.Op {
		case api.QueuePut:
			return api.QueueReply{ID: "m1"}, nil
		case api.QueueGet:
			return api.QueueReply{Message: &api.QueueMessage{ID: "m1", Body: []byte("hi"), Deliveries: 1, Receipt: "r1"}}, nil
		case api.QueuePeek:
			if req.Max != 3 {
				return api.QueueReply{}, errors.New("max not carried")
			}
			return api.QueueReply{Length: 9, Messages: []api.QueueMessage{{ID: "m1", Body: []byte("hi"), Receipt: "leak"}}}, nil
		case api.QueueDelete:
			return api.QueueReply{}, &client.StatusError{Code: http.StatusConflict, Message: "stale receipt"}
		}
		return api.QueueReply{}, errors.New("connection refused")
	}})
	g := s.newGuest("vm-1")
	hostEnd, guestEnd := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = g.ch.Serve(ctx, hostEnd) }()
	guest, err := channel.Dial(guestEnd, channel.Hello{Version: channel.Version, Side: "guest"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()
	st, err := guest.Open("queue")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		call channel.QueueCall
		want channel.QueueAnswer
	}{
		{channel.QueueCall{Op: "put", Queue: "q", Body: []byte("hi")}, channel.QueueAnswer{Code: 200, ID: "m1"}},
		{channel.QueueCall{Op: "get", Queue: "q", Visibility: "5s"}, channel.QueueAnswer{Code: 200, Message: &channel.QueueMessage{ID: "m1", Body: []byte("hi"), Deliveries: 1, Receipt: "r1"}}},
		{channel.QueueCall{Op: "delete", Queue: "q", ID: "m1", Receipt: "r0"}, channel.QueueAnswer{Code: 409, Error: "stale receipt"}},
		{channel.QueueCall{Op: "peek", Queue: "q", Max: 3}, channel.QueueAnswer{Code: 200, Length: 9, Messages: []channel.QueueMessage{{ID: "m1", Body: []byte("hi")}}}},
		{channel.QueueCall{Op: "other", Queue: "q"}, channel.QueueAnswer{Code: 502, Error: "connection refused"}},
	} {
		if err := channel.WriteFrame(st, tc.call); err != nil {
			t.Fatal(err)
		}
		var got channel.QueueAnswer
		if err := channel.ReadFrame(st, &got); err != nil {
			t.Fatal(err)
		}
		if got.Code != tc.want.Code || got.Error != tc.want.Error || got.ID != tc.want.ID ||
			(got.Message == nil) != (tc.want.Message == nil) || (got.Message != nil && (string(got.Message.Body) != "hi" || got.Message.Receipt != "r1")) {
			t.Errorf("%s: got %+v, want %+v", tc.call.Op, got, tc.want)
		}
		if got.Length != tc.want.Length || len(got.Messages) != len(tc.want.Messages) || (len(got.Messages) == 1 && (got.Messages[0].Receipt != "" || string(got.Messages[0].Body) != "hi")) {
			t.Errorf("%s: got %d messages %+v of %d, want %+v", tc.call.Op, len(got.Messages), got.Messages, got.Length, tc.want)
		}
	}
	if want := "vm-1 put q,vm-1 get q,vm-1 delete q,vm-1 peek q,vm-1 other q"; strings.Join(asked, ",") != want {
		t.Errorf("the fabric was asked %q, want %q", strings.Join(asked, ","), want)
	}
	// A bad frame: 400, then the stream ends.
	if _, err := st.Write([]byte{0, 0, 0, 3, '{', 'x', '}'}); err != nil {
		t.Fatal(err)
	}
	var got channel.QueueAnswer
	if err := channel.ReadFrame(st, &got); err != nil || got.Code != http.StatusBadRequest {
		t.Errorf("bad frame: %+v, %v; want 400", got, err)
	}
}
