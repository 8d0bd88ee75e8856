package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

// Queues are kept as one key per message, in order of their IDs (the
// enqueue time first, so a prefix range is the queue in FIFO order):
//
//	/loom/v1/queues/<service>/<queue>/<id>   api.QueueMessage
//	/loom/v1/queuenames/<service>/<queue>    "" (the queues a service has)

// Queue errors.
var (
	ErrQueueFull    = errors.New("queue full")
	ErrStaleReceipt = errors.New("stale receipt")
)

// maxQueueLength is api.MaxQueueLength (a test lowers it).
var maxQueueLength = api.MaxQueueLength

func queuePrefix(svc, queue string) string { return prefix + "queues/" + svc + "/" + queue + "/" }
func queueNames(svc string) string         { return prefix + "queuenames/" + svc + "/" }

// QueuePut appends a message to a service's queue and returns its ID. The
// bounds (messages per queue, queues per service) hold under concurrent
// puts: the write is conditional on no message (and, for a new queue, no
// queue) having been created since they were counted, and is counted
// again when one was.
func (s *Store) QueuePut(ctx context.Context, svc, queue string, body []byte, now time.Time) (string, error) {
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	id := fmt.Sprintf("%016x%s", now.UnixNano(), hex.EncodeToString(rnd[:]))
	b, err := json.Marshal(api.QueueMessage{ID: id, Body: body, Enqueued: now.UTC(), VisibleAt: now.UTC()})
	if err != nil {
		return "", err
	}
	for {
		names, err := s.cli.Get(ctx, queueNames(svc), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return "", fmt.Errorf("reading the queues of %s: %w", svc, err)
		}
		rev := names.Header.Revision
		known := false
		for _, kv := range names.Kvs {
			known = known || string(kv.Key) == queueNames(svc)+queue
		}
		if !known && len(names.Kvs) >= api.MaxQueuesPerSvc {
			return "", fmt.Errorf("service %s has %d queues, the most it may: %w", svc, len(names.Kvs), ErrQueueFull)
		}
		n, err := s.cli.Get(ctx, queuePrefix(svc, queue), clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev))
		if err != nil {
			return "", fmt.Errorf("counting queue %s of %s: %w", queue, svc, err)
		}
		if n.Count >= int64(maxQueueLength) {
			return "", fmt.Errorf("queue %s of %s holds %d messages, the most it may (delete what is processed): %w", queue, svc, n.Count, ErrQueueFull)
		}
		// Nothing created in the queue since the count (deliveries and
		// deletions do not matter: they create nothing).
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(queuePrefix(svc, queue)), "<", rev+1).WithPrefix()}
		ops := []clientv3.Op{clientv3.OpPut(queuePrefix(svc, queue)+id, string(b))}
		if !known {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(queueNames(svc)), "<", rev+1).WithPrefix())
			ops = append(ops, clientv3.OpPut(queueNames(svc)+queue, ""))
		}
		t, err := s.txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return "", fmt.Errorf("storing a message on queue %s of %s: %w", queue, svc, err)
		}
		if t.Succeeded {
			return id, nil
		}
	}
}

// QueueGet delivers the oldest visible message of a queue and hides it
// until now+visibility; nil when none is visible. Each delivery gets a new
// receipt, and only the latest receipt deletes the message.
func (s *Store) QueueGet(ctx context.Context, svc, queue string, visibility time.Duration, now time.Time) (*api.QueueMessage, error) {
	var got *api.QueueMessage
	err := s.visible(ctx, svc, queue, now, 0, func(key string, rev int64, m api.QueueMessage) (bool, error) {
		var rnd [12]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return false, err
		}
		m.Deliveries++
		m.Receipt = hex.EncodeToString(rnd[:])
		m.VisibleAt = now.Add(visibility).UTC()
		b, err := json.Marshal(m)
		if err != nil {
			return false, err
		}
		t, err := s.txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return false, fmt.Errorf("delivering message %s: %w", m.ID, err)
		}
		if t.Succeeded {
			got = &m
			return false, nil
		}
		return true, nil // another getter took it first: on to the next
	})
	return got, err
}

// visible calls fn with each visible message of a queue, in FIFO order,
// read a page at a time (at revision rev; 0: the latest), until fn says
// to stop or errs.
func (s *Store) visible(ctx context.Context, svc, queue string, now time.Time, rev int64, fn func(key string, modRev int64, m api.QueueMessage) (bool, error)) error {
	from, end := queuePrefix(svc, queue), clientv3.GetPrefixRangeEnd(queuePrefix(svc, queue))
	for {
		r, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(256), clientv3.WithRev(rev))
		if err != nil {
			return fmt.Errorf("reading queue %s of %s: %w", queue, svc, err)
		}
		for _, kv := range r.Kvs {
			var m api.QueueMessage
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				return fmt.Errorf("decoding message %s: %w", kv.Key, err)
			}
			if m.VisibleAt.After(now) {
				continue
			}
			if more, err := fn(string(kv.Key), kv.ModRevision, m); !more || err != nil {
				return err
			}
		}
		if !r.More || len(r.Kvs) == 0 {
			return nil
		}
		from = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
}

// QueuePeek returns up to max visible messages from the front of a queue
// without delivering them (no receipts, nothing hidden), and how many
// messages the queue holds.
func (s *Store) QueuePeek(ctx context.Context, svc, queue string, max int, now time.Time) ([]api.QueueMessage, int, error) {
	from, end := queuePrefix(svc, queue), clientv3.GetPrefixRangeEnd(queuePrefix(svc, queue))
	n, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithCountOnly())
	if err != nil {
		return nil, 0, fmt.Errorf("counting queue %s of %s: %w", queue, svc, err)
	}
	// Read at the revision counted, so the length and the messages agree.
	out := []api.QueueMessage{}
	if max > 0 {
		err = s.visible(ctx, svc, queue, now, n.Header.Revision, func(_ string, _ int64, m api.QueueMessage) (bool, error) {
			m.Receipt = ""
			out = append(out, m)
			return len(out) < max, nil
		})
	}
	if err != nil {
		return nil, 0, err
	}
	return out, int(n.Count), nil
}

// QueueDelete removes a delivered message: receipt must be its latest
// delivery's (ErrStaleReceipt otherwise: it was delivered again since, and
// the later receiver deletes it); ErrNotFound if it is gone.
func (s *Store) QueueDelete(ctx context.Context, svc, queue, id, receipt string) error {
	if strings.Contains(id, "/") {
		return fmt.Errorf("message %s: %w", id, ErrNotFound)
	}
	key := queuePrefix(svc, queue) + id
	r, err := s.cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("reading message %s: %w", id, err)
	}
	if len(r.Kvs) == 0 {
		return fmt.Errorf("message %s of queue %s: %w (deleted already?)", id, queue, ErrNotFound)
	}
	var m api.QueueMessage
	if err := json.Unmarshal(r.Kvs[0].Value, &m); err != nil {
		return fmt.Errorf("decoding message %s: %w", id, err)
	}
	if m.Receipt != receipt {
		return fmt.Errorf("message %s: %w: it was delivered again since (%d deliveries)", id, ErrStaleReceipt, m.Deliveries)
	}
	t, err := s.txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", r.Kvs[0].ModRevision)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("deleting message %s: %w", id, err)
	}
	if !t.Succeeded {
		return fmt.Errorf("message %s: %w: it was delivered again while being deleted", id, ErrStaleReceipt)
	}
	return nil
}

// Queues describes the queues of a service.
func (s *Store) Queues(ctx context.Context, svc string, now time.Time) ([]api.QueueInfo, error) {
	names, err := s.cli.Get(ctx, queueNames(svc), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("reading the queues of %s: %w", svc, err)
	}
	out := []api.QueueInfo{}
	for _, kv := range names.Kvs {
		q := api.QueueInfo{Name: strings.TrimPrefix(string(kv.Key), queueNames(svc))}
		r, err := s.cli.Get(ctx, queuePrefix(svc, q.Name), clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("reading queue %s of %s: %w", q.Name, svc, err)
		}
		for _, m := range r.Kvs {
			var msg api.QueueMessage
			if err := json.Unmarshal(m.Value, &msg); err != nil {
				return nil, fmt.Errorf("decoding message %s: %w", m.Key, err)
			}
			q.Messages++
			if msg.VisibleAt.After(now) {
				q.Hidden++
			}
		}
		out = append(out, q)
	}
	return out, nil
}

// deleteQueuesOps are the operations that remove every queue of a
// service (with the service).
func deleteQueuesOps(svc string) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpDelete(prefix+"queues/"+svc+"/", clientv3.WithPrefix()),
		clientv3.OpDelete(queueNames(svc), clientv3.WithPrefix()),
	}
}
