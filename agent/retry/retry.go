// Package retry paces an agent's attempts at something that may fail for
// a while (the fabric not reachable yet, a channel session lost, a role
// that exits): exponential backoff from one second up to a cap.
package retry

import (
	"context"
	"time"
)

// Backoff doubles its wait from one second up to Max on every Wait.
// The zero value with Max set is ready to use.
type Backoff struct {
	Max time.Duration
	d   time.Duration
}

// Next is how long the next Wait sleeps.
func (b *Backoff) Next() time.Duration {
	if b.d == 0 {
		return min(time.Second, max(b.Max, time.Millisecond))
	}
	return b.d
}

// Wait sleeps the current delay (or until ctx ends: its error) and doubles
// the next one, up to Max.
func (b *Backoff) Wait(ctx context.Context) error {
	d := b.Next()
	if err := Sleep(ctx, d); err != nil {
		return err
	}
	b.advance(d)
	return nil
}

// Sleep waits d, or until ctx ends (its error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// advance doubles the delay that was just waited, d, up to Max.
func (b *Backoff) advance(d time.Duration) { b.d = min(2*d, max(b.Max, d)) }

// Reset starts again from one second.
func (b *Backoff) Reset() { b.d = 0 }

// Every calls fn every d (the first time d from now) until ctx ends.
func Every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}
