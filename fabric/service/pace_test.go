package service

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	var nilPacer *Pacer
	nilPacer.Begin()()
	if d := nilPacer.Next(); d != 0 {
		t.Errorf("a nil pacer waits %v", d)
	}
	// The scheduler is left out: this test's own machine may be busy.
	p := &Pacer{Slow: 20 * time.Millisecond, SchedSlow: -1, MaxWait: time.Second}
	if d := p.Next(); d != 0 {
		t.Errorf("no heartbeats: wait %v, want none", d)
	}
	beats := func(fast, slow int) {
		for range fast {
			p.Begin()()
		}
		for range slow {
			end := p.Begin()
			time.Sleep(25 * time.Millisecond)
			end()
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
		beats(90, 2)
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
	// A heartbeat stuck in loomd counts before it ends.
	end := p.Begin()
	time.Sleep(25 * time.Millisecond)
	if d := p.Next(); d != 50*time.Millisecond {
		t.Errorf("a heartbeat in flight for 25 ms: wait %v, want 50ms", d)
	}
	end()
}

// The scheduler's histogram is read, and a quiet process is not pressed.
func TestPacerSchedulerSignal(t *testing.T) {
	p := &Pacer{}
	p.Next() // the histogram since the process began
	time.Sleep(10 * time.Millisecond)
	if d := p.schedP99(); d > time.Second {
		t.Errorf("scheduler p99 %v in an idle test", d)
	}
	if p.sched[0].Value.Kind() == 0 {
		t.Error("the scheduler's latency histogram was not read")
	}
}
