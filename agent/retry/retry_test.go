package retry

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Max: 5 * time.Second}
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
		b.advance(b.Next()) // what Wait does after sleeping
	}
	want := []time.Duration{1, 2, 4, 5, 5}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays %v, want %v seconds", got, want)
		}
	}
	b.Reset()
	if b.Next() != time.Second {
		t.Errorf("after Reset: %v, want 1s", b.Next())
	}
}

func TestWait(t *testing.T) {
	b := Backoff{Max: 40 * time.Millisecond}
	start := time.Now()
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Errorf("first wait %v, want the cap 40ms (below a second)", took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (&Backoff{Max: time.Hour}).Wait(ctx); err != context.Canceled {
		t.Errorf("Wait on a cancelled context: %v, want context.Canceled", err)
	}
}

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Millisecond)
	defer cancel()
	n := 0
	start := time.Now()
	Every(ctx, 10*time.Millisecond, func() { n++ })
	if n < 2 || n > 6 || time.Since(start) < 50*time.Millisecond {
		t.Errorf("every 10ms for 55ms: %d calls, returned after %v", n, time.Since(start))
	}
}
