package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

// Usage records are appended in batches, one key per metering period
// (never one per record), named by the period's end so that a range read
// is in time order:
//
//	/loom/v1/usage/<end, unix ns, 20 digits>   []api.UsageRecord

const usagePrefix = prefix + "usage/"

func usageKey(ns int64) string { return fmt.Sprintf("%s%020d", usagePrefix, ns) }

// AppendUsage stores one period's records; a period is written once (a
// second write of the same end is refused, so a retried append never
// counts twice).
func (s *Store) AppendUsage(ctx context.Context, recs []api.UsageRecord) error {
	if len(recs) == 0 {
		return nil
	}
	b, err := json.Marshal(recs)
	if err != nil {
		return err
	}
	key := usageKey(recs[0].End.UnixNano())
	r, err := s.txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("storing usage: %w", err)
	}
	if !r.Succeeded {
		return fmt.Errorf("usage of the period ending %v: %w", recs[0].End, ErrExists)
	}
	return nil
}

// Usage reads the records of periods ending at or after since (ns), of
// one service ("" for all), oldest first, at most limit.
func (s *Store) Usage(ctx context.Context, sinceNS int64, service string, limit int) ([]api.UsageRecord, error) {
	r, err := s.cli.Get(ctx, usageKey(max(sinceNS, 0)), clientv3.WithRange(clientv3.GetPrefixRangeEnd(usagePrefix)))
	if err != nil {
		return nil, fmt.Errorf("reading usage: %w", err)
	}
	out := []api.UsageRecord{}
	for _, kv := range r.Kvs {
		var recs []api.UsageRecord
		if err := json.Unmarshal(kv.Value, &recs); err != nil {
			return nil, fmt.Errorf("decoding usage %s: %w", kv.Key, err)
		}
		for _, u := range recs {
			if service == "" || u.Service == service {
				if len(out) >= limit {
					return out, nil
				}
				out = append(out, u)
			}
		}
	}
	return out, nil
}
