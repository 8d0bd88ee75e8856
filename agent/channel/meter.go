package channel

import (
	"context"
	"io"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// metered counts the bytes over a connection and, with a limit, paces
// them: a token bucket per direction of limit bytes/s with a burst of
// 256 KiB (or the limit, if smaller).
type metered struct {
	io.ReadWriteCloser
	n      *atomic.Uint64
	rd, wr *rate.Limiter
}

func meter(c io.ReadWriteCloser, limit int, n *atomic.Uint64) io.ReadWriteCloser {
	m := &metered{ReadWriteCloser: c, n: n}
	if limit > 0 {
		burst := min(limit, 256<<10)
		m.rd, m.wr = rate.NewLimiter(rate.Limit(limit), burst), rate.NewLimiter(rate.Limit(limit), burst)
	}
	return m
}

func (m *metered) Read(p []byte) (int, error) {
	if m.rd != nil && len(p) > m.rd.Burst() {
		p = p[:m.rd.Burst()]
	}
	n, err := m.ReadWriteCloser.Read(p)
	m.n.Add(uint64(n))
	if m.rd != nil && n > 0 {
		_ = m.rd.WaitN(context.Background(), n) // n ≤ burst, no deadline: it cannot fail
	}
	return n, err
}

func (m *metered) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p
		if m.wr != nil {
			if len(chunk) > m.wr.Burst() {
				chunk = chunk[:m.wr.Burst()]
			}
			_ = m.wr.WaitN(context.Background(), len(chunk)) // chunk ≤ burst, no deadline: it cannot fail
		}
		n, err := m.ReadWriteCloser.Write(chunk)
		written += n
		m.n.Add(uint64(n))
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}
