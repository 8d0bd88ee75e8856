package service

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	var nilPacer *Pacer
	nilPacer.Observe(time.Second)
	if d := nilPacer.Next(); d != 0 {
		t.Errorf("a nil pacer waits %v", d)
	}
	p := &Pacer{MaxWait: time.Second}
	if d := p.Next(); d != 0 {
		t.Errorf("no heartbeats: wait %v, want none", d)
	}
	beats := func(fast, slow int) {
		for range fast {
			p.Observe(time.Millisecond)
		}
		for range slow {
			p.Observe(100 * time.Millisecond)
		}
	}
	// One slow heartbeat in a thousand is the hosts not feeling it.
	beats(999, 1)
	if d := p.Next(); d != 0 {
		t.Errorf("1 slow in 1,000: wait %v, want none", d)
	}
	// Slow ones double the wait, up to MaxWait.
	want := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	for i, w := range want {
		beats(90, 10)
		if d := p.Next(); d != w {
			t.Fatalf("slow round %d: wait %v, want %v", i, d, w)
		}
	}
	// Fast ones shrink it by a third at a time, to none.
	prev := time.Second
	for i := 0; ; i++ {
		beats(100, 0)
		d := p.Next()
		if d >= prev && d != 0 {
			t.Fatalf("fast round %d: wait %v after %v, want less", i, d, prev)
		}
		if d == 0 {
			break
		}
		if i > 20 {
			t.Fatalf("wait still %v after %d fast rounds", d, i)
		}
		prev = d
	}
}
