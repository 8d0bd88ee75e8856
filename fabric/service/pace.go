package service

import (
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
// The API server tells the pacer how long each heartbeat took (Observe);
// between two passes of a backlog the controller waits what the pacer
// says (Wait). While more than one heartbeat in a hundred takes longer
// than Slow, the wait doubles (up to MaxWait); while they are fast it
// shrinks by a third, down to none: the controller runs flat out when
// the hosts don't feel it, and gives way as soon as they do. A pass with
// nothing left to do never waits; nor does a loomd nobody heartbeats to.
type Pacer struct {
	// Slow is a heartbeat the pacer yields to (default 20 ms).
	Slow time.Duration
	// MaxWait bounds the wait between passes (default 5 s).
	MaxWait time.Duration

	mu         sync.Mutex
	seen, slow int // heartbeats since the last Wait, and the slow ones
	wait       time.Duration
}

// Observe records one heartbeat's time in loomd.
func (p *Pacer) Observe(d time.Duration) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen++
	if d > p.slowAt() {
		p.slow++
	}
}

func (p *Pacer) slowAt() time.Duration {
	if p.Slow > 0 {
		return p.Slow
	}
	return 20 * time.Millisecond
}

// Next is how long the controller waits before its next pass of a
// backlog, from the heartbeats seen since it last asked.
func (p *Pacer) Next() time.Duration {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	maxWait := p.MaxWait
	if maxWait <= 0 {
		maxWait = 5 * time.Second
	}
	switch {
	case p.slow > 0 && p.slow*100 >= p.seen:
		p.wait = min(max(2*p.wait, 50*time.Millisecond), maxWait)
	case p.wait < 10*time.Millisecond:
		p.wait = 0
	default:
		p.wait = p.wait * 2 / 3
	}
	p.seen, p.slow = 0, 0
	return p.wait
}
