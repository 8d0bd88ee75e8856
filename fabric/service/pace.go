package service

import (
	"cmp"
	"runtime/metrics"
	"sync"
	"time"
)

// Pacer keeps the controller's bulk work — a thousand services deployed
// at once, a rack's instances replaced — from crowding out the hosts'
// heartbeats on a busy loomd. Every placed instance costs more than its
// own write: its host wakes up, fetches its goal, starts the guest and
// reports it, and the store's copies take each of those writes in. Left
// alone, a controller writing thousands a second saturates the machine
// and a heartbeat waits behind all of it (seconds, on two cores).
//
// Between two transactions of a backlog the controller waits what Next
// says. The pacer reads the pressure since the last Next from two
// signals: the heartbeats themselves (Begin: one that took, or has been
// in flight for, longer than Slow) and Go's scheduler (how long
// goroutines waited for a CPU: a heartbeat's handling hops through
// several, so over SchedSlow at the 99th percentile is a heartbeat soon
// too slow). Under pressure the wait doubles (up to MaxWait); without,
// it shrinks by a third, down to none: the controller runs flat out
// while the hosts don't feel it and gives way as soon as they do.
type Pacer struct {
	// Slow is a heartbeat the pacer yields to (default 20 ms).
	Slow time.Duration
	// SchedSlow is the 99th-percentile wait for a CPU it yields to
	// (default 5 ms; negative: the scheduler is not looked at).
	SchedSlow time.Duration
	// MaxWait bounds the wait between transactions (default 1 s).
	MaxWait time.Duration

	mu       sync.Mutex
	seen     int
	slow     int                  // heartbeats since the last Next that took longer than Slow
	inflight map[uint64]time.Time // heartbeats being handled: when each began
	nextID   uint64
	wait     time.Duration
	sched    []metrics.Sample
	last     []uint64 // the scheduler histogram's counts at the last Next
}

// Begin records that a heartbeat's handling began; the returned func
// records its end.
func (p *Pacer) Begin() (end func()) {
	if p == nil {
		return func() {}
	}
	start := time.Now()
	p.mu.Lock()
	if p.inflight == nil {
		p.inflight = map[uint64]time.Time{}
	}
	id := p.nextID
	p.nextID++
	p.inflight[id] = start
	p.mu.Unlock()
	return func() {
		d := time.Since(start)
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.inflight, id)
		p.seen++
		if d > p.slowAt() {
			p.slow++
		}
	}
}

func (p *Pacer) slowAt() time.Duration { return cmp.Or(p.Slow, 20*time.Millisecond) }

// Next is how long to wait before the controller's next transaction of
// a backlog.
func (p *Pacer) Next() time.Duration {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pressed := p.slow > 0 && p.slow*100 >= p.seen
	now := time.Now()
	for _, began := range p.inflight {
		if now.Sub(began) > p.slowAt() {
			pressed = true
			break
		}
	}
	if p.SchedSlow >= 0 && p.schedP99() > cmp.Or(p.SchedSlow, 5*time.Millisecond) {
		pressed = true
	}
	switch {
	case pressed:
		p.wait = min(max(2*p.wait, 50*time.Millisecond), cmp.Or(p.MaxWait, time.Second))
	case p.wait < 10*time.Millisecond:
		p.wait = 0
	default:
		p.wait = p.wait * 2 / 3
	}
	p.seen, p.slow = 0, 0
	return p.wait
}

// schedP99 is the 99th percentile of the time goroutines waited for a
// CPU since the last call (0 if none were recorded, or this Go doesn't
// keep the histogram).
func (p *Pacer) schedP99() time.Duration {
	if p.sched == nil {
		p.sched = []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	}
	metrics.Read(p.sched)
	if p.sched[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	h := p.sched[0].Value.Float64Histogram()
	delta := make([]uint64, len(h.Counts))
	var total uint64
	for i, c := range h.Counts {
		if i < len(p.last) {
			c -= p.last[i]
		}
		delta[i] = c
		total += c
	}
	p.last = append(p.last[:0], h.Counts...)
	if total == 0 {
		return 0
	}
	// The bucket holding the 99th percentile: its lower bound.
	var acc uint64
	for i, c := range delta {
		acc += c
		if acc*100 >= total*99 {
			return time.Duration(max(h.Buckets[i], 0) * float64(time.Second)) // the first bucket starts at -Inf
		}
	}
	return 0
}
