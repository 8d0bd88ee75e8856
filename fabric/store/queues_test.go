package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// TestQueues: FIFO delivery, hiding for the visibility timeout and
// redelivery after it (at least once), receipts, bounds, isolation
// between services, and messages surviving a restart of the store.
func TestQueues(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for i := range 3 {
		if _, err := s.QueuePut(ctx, "gb", "entries", fmt.Appendf(nil, "m%d", i), t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.QueuePut(ctx, "other", "entries", []byte("not yours"), t0); err != nil {
		t.Fatal(err)
	}
	m0, err := s.QueueGet(ctx, "gb", "entries", 30*time.Second, t0.Add(time.Second))
	if err != nil || m0 == nil || string(m0.Body) != "m0" || m0.Deliveries != 1 {
		t.Fatalf("first get = %+v, %v; want m0, delivery 1", m0, err)
	}
	m1, err := s.QueueGet(ctx, "gb", "entries", 30*time.Second, t0.Add(time.Second))
	if err != nil || m1 == nil || string(m1.Body) != "m1" {
		t.Fatalf("second get = %+v, %v; want m1 (m0 is hidden)", m1, err)
	}
	// m0 is never deleted: after its visibility timeout it comes back.
	again, err := s.QueueGet(ctx, "gb", "entries", 30*time.Second, t0.Add(40*time.Second))
	if err != nil || again == nil || again.ID != m0.ID || again.Deliveries != 2 || again.Receipt == m0.Receipt {
		t.Fatalf("get after the timeout = %+v, %v; want m0 again, delivery 2, a new receipt", again, err)
	}
	if err := s.QueueDelete(ctx, "gb", "entries", m0.ID, m0.Receipt); !errors.Is(err, ErrStaleReceipt) {
		t.Errorf("delete with the first delivery's receipt = %v, want ErrStaleReceipt", err)
	}
	if err := s.QueueDelete(ctx, "gb", "entries", m0.ID, again.Receipt); err != nil {
		t.Fatal(err)
	}
	if err := s.QueueDelete(ctx, "gb", "entries", m0.ID, again.Receipt); !IsNotFound(err) {
		t.Errorf("second delete = %v, want not found", err)
	}
	if err := s.QueueDelete(ctx, "gb", "entries", "../x", "r"); !IsNotFound(err) {
		t.Errorf("delete of a path = %v, want not found", err)
	}
	qs, err := s.Queues(ctx, "gb", t0.Add(40*time.Second))
	if err != nil || len(qs) != 1 || qs[0] != (api.QueueInfo{Name: "entries", Messages: 2, Hidden: 0}) {
		t.Errorf("Queues = %+v, %v; want entries with 2 messages, none hidden (m1's timeout ran out)", qs, err)
	}

	// Survives a restart: m1 (delivered, not deleted) and m2 come back.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	defer s.Close()
	var got []string
	for {
		m, err := s.QueueGet(ctx, "gb", "entries", time.Minute, t0.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if m == nil {
			break
		}
		got = append(got, string(m.Body))
	}
	if fmt.Sprint(got) != "[m1 m2]" {
		t.Errorf("after a restart got %v, want [m1 m2]", got)
	}
	if m, err := s.QueueGet(ctx, "other", "entries", time.Minute, t0.Add(time.Hour)); err != nil || m == nil || string(m.Body) != "not yours" {
		t.Errorf("the other service's queue = %+v, %v", m, err)
	}

	// Bounds: messages per queue and queues per service.
	old := maxQueueLength
	maxQueueLength = 5
	defer func() { maxQueueLength = old }()
	for i := range 6 {
		_, err := s.QueuePut(ctx, "full", "q", []byte("x"), t0)
		if i < 5 && err != nil {
			t.Fatal(err)
		}
		if i == 5 && !errors.Is(err, ErrQueueFull) {
			t.Errorf("sixth put on a queue of 5 = %v, want ErrQueueFull", err)
		}
	}
	for i := range api.MaxQueuesPerSvc {
		if _, err := s.QueuePut(ctx, "many", fmt.Sprintf("q%d", i), nil, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.QueuePut(ctx, "many", "one-more", nil, t0); !errors.Is(err, ErrQueueFull) {
		t.Errorf("queue %d of a service = %v, want ErrQueueFull", api.MaxQueuesPerSvc+1, err)
	}

	// Deleting a service deletes its queues.
	if err := s.CreateService(ctx, api.Service{Name: "many"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteService(ctx, "many"); err != nil {
		t.Fatal(err)
	}
	if qs, err := s.Queues(ctx, "many", t0); err != nil || len(qs) != 0 {
		t.Errorf("queues of a deleted service: %+v, %v", qs, err)
	}
	if err := s.DeleteService(ctx, "many"); !IsNotFound(err) {
		t.Errorf("deleting it again = %v, want not found", err)
	}
}

// TestQueueConcurrentGets: getters racing for the same messages each get
// a different one, none lost.
func TestQueueConcurrentGets(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	const n = 40
	for i := range n {
		if _, err := s.QueuePut(ctx, "gb", "q", fmt.Appendf(nil, "%d", i), t0.Add(time.Duration(i))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				m, err := s.QueueGet(ctx, "gb", "q", time.Minute, t0.Add(time.Second))
				if err != nil {
					t.Error(err)
					return
				}
				if m == nil {
					return
				}
				mu.Lock()
				seen[string(m.Body)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Errorf("%d distinct messages delivered, want %d", len(seen), n)
	}
	for b, c := range seen {
		if c != 1 {
			t.Errorf("message %s delivered %d times within its visibility timeout", b, c)
		}
	}
}

// TestQueuePeek: a peek reads visible messages from the front without
// delivering them (no receipt, nothing hidden) and tells the length.
func TestQueuePeek(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	if ms, n, err := s.QueuePeek(ctx, "gb", "book", 5, t0); err != nil || len(ms) != 0 || n != 0 {
		t.Fatalf("peek of no queue = %v, %d, %v", ms, n, err)
	}
	for i := range 5 {
		if _, err := s.QueuePut(ctx, "gb", "book", fmt.Appendf(nil, "m%d", i), t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.QueuePut(ctx, "other", "book", []byte("not yours"), t0); err != nil {
		t.Fatal(err)
	}
	got, err := s.QueueGet(ctx, "gb", "book", time.Minute, t0.Add(time.Second)) // m0, hidden
	if err != nil || string(got.Body) != "m0" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	bodies := func(ms []api.QueueMessage) string {
		var b []string
		for _, m := range ms {
			if m.Receipt != "" {
				t.Errorf("peeked %s with a receipt", m.ID)
			}
			b = append(b, string(m.Body))
		}
		return strings.Join(b, ",")
	}
	for range 2 { // twice: peeking changes nothing
		ms, n, err := s.QueuePeek(ctx, "gb", "book", 3, t0.Add(2*time.Second))
		if err != nil || bodies(ms) != "m1,m2,m3" || n != 5 {
			t.Errorf("peek 3 = %q, length %d, %v; want m1,m2,m3 of 5", bodies(ms), n, err)
		}
	}
	ms, n, err := s.QueuePeek(ctx, "gb", "book", 32, t0.Add(2*time.Minute)) // m0 visible again
	if err != nil || bodies(ms) != "m0,m1,m2,m3,m4" || n != 5 {
		t.Errorf("peek 32 after the visibility = %q, length %d, %v", bodies(ms), n, err)
	}
	if m, err := s.QueueGet(ctx, "gb", "book", time.Minute, t0.Add(2*time.Minute)); err != nil || string(m.Body) != "m0" || m.Deliveries != 2 {
		t.Errorf("get after peeks = %+v, %v; want m0, its second delivery", m, err)
	}
}

// TestQueueBoundsUnderConcurrentPuts: puts racing for the last places of a
// queue, and for the last queues of a service, never take more than the
// bound allows; the others are told the queue is full.
func TestQueueBoundsUnderConcurrentPuts(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	old := maxQueueLength
	maxQueueLength = 5
	defer func() { maxQueueLength = old }()

	race := func(n int, put func(i int) error) (ok, full int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				err := put(i)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok++
				case errors.Is(err, ErrQueueFull):
					full++
				default:
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		return ok, full
	}

	ok, full := race(24, func(i int) error {
		_, err := s.QueuePut(ctx, "gb", "q", fmt.Appendf(nil, "%d", i), t0.Add(time.Duration(i)))
		return err
	})
	if _, n, err := s.QueuePeek(ctx, "gb", "q", 100, t0); err != nil || n != 5 || ok != 5 || full != 19 {
		t.Errorf("24 racing puts on a queue of 5: %d stored, %d told full; the queue holds %d (%v), want 5, 19, 5", ok, full, n, err)
	}

	ok, full = race(api.MaxQueuesPerSvc+8, func(i int) error {
		_, err := s.QueuePut(ctx, "many", fmt.Sprintf("q%d", i), nil, t0)
		return err
	})
	if qs, err := s.Queues(ctx, "many", t0); err != nil || len(qs) != api.MaxQueuesPerSvc || ok != api.MaxQueuesPerSvc || full != 8 {
		t.Errorf("%d racing new queues of a service of at most %d: %d made, %d told full; it has %d (%v)", api.MaxQueuesPerSvc+8, api.MaxQueuesPerSvc, ok, full, len(qs), err)
	}
}
