package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/loomfabric/loom/fabric/api"
)

// Operator tokens and the audit log:
//
//	/loom/v1/tokens/<name>      StoredToken (the secret only as its sha256)
//	/loom/v1/audit/<ns>-<rand>  api.AuditRecord, ns the time (20 digits)

// StoredToken is a token as stored: its hash, never its secret.
type StoredToken struct {
	api.Token
	// Hash is the sha256 (hex) of the whole bearer token.
	Hash string `json:"hash"`
}

func (s *Store) tokens() collection[StoredToken] {
	return collection[StoredToken]{s: s, prefix: prefix + "tokens/", kind: "token"}
}

// CreateToken stores a new token; ErrExists if the name is taken.
func (s *Store) CreateToken(ctx context.Context, t StoredToken) error {
	return s.tokens().create(ctx, t.Name, t)
}

// Token reads one token. Reads are as consistent as etcd's (a revoked
// token is gone for every replica at once).
func (s *Store) Token(ctx context.Context, name string) (StoredToken, error) {
	return s.tokC.get(ctx, name)
}

// Tokens lists the tokens.
func (s *Store) Tokens(ctx context.Context) ([]StoredToken, error) { return s.tokC.list(ctx, nil) }

// DeleteToken revokes a token; ErrNotFound if there is none.
func (s *Store) DeleteToken(ctx context.Context, name string) error {
	return s.tokens().del(ctx, name)
}

const auditPrefix = prefix + "audit/"

func auditKey(t time.Time) string {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand never fails
	return fmt.Sprintf("%s%020d-%s", auditPrefix, t.UnixNano(), hex.EncodeToString(rnd[:]))
}

// AppendAudit records one write. Any replica may (each record its own key).
func (s *Store) AppendAudit(ctx context.Context, rec api.AuditRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, auditKey(rec.Time), string(b)); err != nil {
		return fmt.Errorf("recording an audit record: %w", err)
	}
	return nil
}

// Audit lists up to limit records from since on, oldest first.
func (s *Store) Audit(ctx context.Context, since time.Time, limit int) ([]api.AuditRecord, error) {
	from := auditPrefix
	if !since.IsZero() {
		from = fmt.Sprintf("%s%020d", auditPrefix, since.UnixNano())
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(auditPrefix))}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	r, err := s.cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	out := make([]api.AuditRecord, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		var rec api.AuditRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("decoding audit record %s: %w", kv.Key, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// TrimAudit keeps at most keep records, none older than maxAge: the
// oldest go first. It says how many it removed.
func (s *Store) TrimAudit(ctx context.Context, keep int, maxAge time.Duration, now time.Time) (int, error) {
	return s.trimLog(ctx, auditPrefix, "the audit log", keep, maxAge, now)
}

// trimLog trims a log kept under pfx by time (keys pfx + 20-digit ns):
// at most keep entries, none older than maxAge.
func (s *Store) trimLog(ctx context.Context, pfx, what string, keep int, maxAge time.Duration, now time.Time) (int, error) {
	r, err := s.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	excess := int(r.Count) - keep
	cut := fmt.Sprintf("%s%020d", pfx, now.Add(-maxAge).UnixNano())
	removed := 0
	for {
		// The oldest keys, a transaction's worth at a time.
		r, err := s.cli.Get(ctx, pfx, clientv3.WithRange(clientv3.GetPrefixRangeEnd(pfx)), clientv3.WithKeysOnly(), clientv3.WithLimit(MaxTxnOps))
		if err != nil {
			return removed, err
		}
		var ops []clientv3.Op
		for _, kv := range r.Kvs {
			if excess-len(ops) <= 0 && string(kv.Key) >= cut {
				break
			}
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
		}
		if len(ops) == 0 {
			return removed, nil
		}
		if _, err := s.txn(ctx).Then(ops...).Commit(); err != nil {
			return removed, fmt.Errorf("trimming %s: %w", what, err)
		}
		removed += len(ops)
		excess -= len(ops)
	}
}
