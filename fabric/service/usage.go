package service

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// Meter turns what hosts report of service instances into usage records:
// every Sample it looks at each instance, and an instance Running (as its
// host reported within Fresh) at two looks in a row ran in between; the
// bytes its channel carried are the growth of its host's counter (a
// counter that went back, a restarted guest, counts from zero). Every
// Flush the period's sums, one record per service, role and size, are
// appended to the store as one batch. Precision is one Sample at each
// start and stop of an instance; a loomd restart loses the period it was
// in (at most one Flush), never counts anything twice.
type Meter struct {
	Sample, Flush, Fresh time.Duration
	// List gives every VM with what its host last reported (vms.Manager).
	List   func(ctx context.Context) ([]api.VM, error)
	Append func(ctx context.Context, recs []api.UsageRecord) error
	Log    *slog.Logger
	now    func() time.Time

	last  map[string]look
	acc   map[usageKey]*api.UsageRecord
	start time.Time // of the period being summed
}

type look struct {
	at      time.Time
	running bool
	bytes   uint64
}

type usageKey struct {
	svc, role     string
	vcpus, memory int
}

// Meter defaults.
const (
	DefaultUsageSample = 5 * time.Second
	DefaultUsageFlush  = time.Minute
)

// Run meters until ctx ends, then appends what it has.
func (m *Meter) Run(ctx context.Context) error {
	m.Sample = cmp.Or(m.Sample, DefaultUsageSample)
	m.Flush = cmp.Or(m.Flush, DefaultUsageFlush)
	m.Fresh = cmp.Or(m.Fresh, 30*time.Second)
	if m.now == nil {
		m.now = time.Now
	}
	m.start = m.now().UTC()
	t := time.NewTicker(m.Sample)
	defer t.Stop()
	next := m.start.Add(m.Flush)
	for {
		select {
		case <-ctx.Done():
			m.flush(context.Background())
			return nil
		case <-t.C:
		}
		vs, err := m.List(ctx)
		if err != nil {
			m.log().Warn("usage: listing instances", "err", err)
			continue
		}
		now := m.now().UTC()
		m.look(vs, now)
		if !now.Before(next) {
			m.flush(ctx)
			next = now.Add(m.Flush)
		}
	}
}

func (m *Meter) log() *slog.Logger {
	if m.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Log
}

// look adds what ran since the last look.
func (m *Meter) look(vs []api.VM, now time.Time) {
	if m.last == nil {
		m.last, m.acc = map[string]look{}, map[usageKey]*api.UsageRecord{}
	}
	seen := map[string]bool{}
	for _, v := range vs {
		if v.Service == "" {
			continue
		}
		seen[v.ID] = true
		l := look{at: now, running: v.State == api.VMStateRunning && v.Desired != api.VMDeleted &&
			!v.Observed.IsZero() && now.Sub(v.Observed) < m.Fresh}
		if v.Usage != nil {
			l.bytes = v.Usage.ChannelBytes
		}
		prev, ok := m.last[v.ID]
		m.last[v.ID] = l
		if !ok {
			continue // a baseline
		}
		k := usageKey{v.Service, v.Role, v.VCPUs, v.MemoryMB}
		r := m.acc[k]
		if r == nil {
			r = &api.UsageRecord{Service: v.Service, Role: v.Role, VCPUs: v.VCPUs, MemoryMB: v.MemoryMB}
			m.acc[k] = r
		}
		if prev.running && l.running {
			r.InstanceSeconds += now.Sub(prev.at).Seconds()
		}
		if l.bytes >= prev.bytes {
			r.ChannelBytes += l.bytes - prev.bytes
		} else {
			r.ChannelBytes += l.bytes
		}
	}
	for id := range m.last {
		if !seen[id] {
			delete(m.last, id)
		}
	}
}

// flush appends the period's records (kept for the next flush if the
// store refuses them).
func (m *Meter) flush(ctx context.Context) {
	now := m.now().UTC()
	var recs []api.UsageRecord
	for _, r := range m.acc {
		if r.InstanceSeconds == 0 && r.ChannelBytes == 0 {
			continue
		}
		r.Start, r.End = m.start, now
		recs = append(recs, *r)
	}
	slices.SortFunc(recs, func(a, b api.UsageRecord) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Role, b.Role), cmp.Compare(a.VCPUs, b.VCPUs), cmp.Compare(a.MemoryMB, b.MemoryMB))
	})
	if err := m.Append(ctx, recs); err != nil {
		m.log().Warn("usage: not stored; kept for the next period", "err", err)
		return
	}
	clear(m.acc)
	m.start = now
}
