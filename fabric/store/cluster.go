package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/loomfabric/loom/agent/retry"
	"github.com/loomfabric/loom/fabric/api"
)

// Keys of the replicated control plane:
//
//	/loom/v1/leader/<lease>     api.Replica of a campaigning replica (etcd's
//	                            election: the oldest key leads)
//	/loom/v1/replicas/<name>    api.Replica of each live replica (under its
//	                            session's lease: gone when it dies)
const (
	leaderPrefix  = prefix + "leader/"
	replicaPrefix = prefix + "replicas/"
)

// DefaultLeaderTTL is how long a dead leader keeps its leadership: its
// session's lease. A failover takes about this long (plus an etcd
// election if its member led raft too).
const DefaultLeaderTTL = 2 * time.Second

// Lead campaigns for the fabric's leadership until ctx ends. While this
// replica leads, work runs with a context that ends when the leadership
// does (its session lost: a pause or a partition longer than ttl), and
// every write of the store (but those AnyReplica allows) is fenced on
// the leader key's revision; while it follows, they fail at once with
// ErrNotLeader. me is published under replicas/ for as long as the
// replica lives, and as the leader key's value while it leads.
func (s *Store) Lead(ctx context.Context, me api.Replica, ttl time.Duration, work func(context.Context) error, log *slog.Logger) error {
	if ttl <= 0 {
		ttl = DefaultLeaderTTL
	}
	secs := max(1, int((ttl+time.Second-1)/time.Second))
	val, err := json.Marshal(me)
	if err != nil {
		return err
	}
	s.setFence(&fence{never: true})
	defer s.setFence(&fence{never: true})
	for ctx.Err() == nil {
		err := s.leadOnce(ctx, me, string(val), secs, work, log)
		if err != nil && ctx.Err() == nil {
			log.Warn("leadership: campaigning again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}

// leadOnce runs one session: publish, campaign, lead until the session
// or ctx ends.
func (s *Store) leadOnce(ctx context.Context, me api.Replica, val string, ttl int, work func(context.Context) error, log *slog.Logger) error {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("opening a session: %w", err)
	}
	defer func() { _ = sess.Close() }() // revokes the lease: our keys go at once; an error means it expires by itself
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-sctx.Done():
		}
	}()
	if _, err := s.cli.Put(sctx, replicaPrefix+me.Name, val, clientv3.WithLease(sess.Lease())); err != nil {
		return fmt.Errorf("publishing replica %s: %w", me.Name, err)
	}
	el := concurrency.NewElection(sess, strings.TrimSuffix(leaderPrefix, "/"))
	if err := el.Campaign(sctx, val); err != nil {
		if sctx.Err() != nil && ctx.Err() == nil {
			return errors.New("session lost while campaigning")
		}
		return err
	}
	s.setFence(&fence{cmp: clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())})
	log.Info("leadership: this replica leads", "name", me.Name, "key", el.Key(), "rev", el.Rev())
	done := make(chan error, 1)
	go func() { done <- work(sctx) }()
	var werr error
	select {
	case <-sctx.Done():
		werr = <-done
	case werr = <-done:
	}
	s.setFence(&fence{never: true})
	cancel()
	if ctx.Err() != nil {
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		defer rcancel()
		_ = el.Resign(rctx) // a clean stop hands over at once; failing, the lease ends it
		return nil
	}
	if werr != nil {
		return fmt.Errorf("leader's work ended: %w", werr)
	}
	return errors.New("leadership lost (session ended)")
}

// Leader is the replica that leads the fabric now, as the watch-fed copy
// has it (ok false while none does).
func (s *Store) Leader() (api.Replica, bool) {
	vs, revs, err := s.leaderC.listRev(Relaxed(context.Background()), nil)
	if err != nil || len(vs) == 0 {
		return api.Replica{}, false
	}
	return vs[slices.Index(revs, slices.Min(revs))], true
}

// Depose ends the leadership of replica name by revoking the lease of
// its leader key (its session's: it must campaign again). Any replica
// may, safely: the deposed one's writes are fenced.
func (s *Store) Depose(ctx context.Context, name string) error {
	r, err := s.cli.Get(ctx, leaderPrefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("reading the leader keys: %w", err)
	}
	for _, kv := range r.Kvs {
		var rep api.Replica
		if json.Unmarshal(kv.Value, &rep) != nil || rep.Name != name || kv.Lease == 0 {
			continue
		}
		if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil {
			return fmt.Errorf("revoking the lease of %s: %w", name, err)
		}
		return nil
	}
	return fmt.Errorf("leader key of %s: %w", name, ErrNotFound)
}

// WaitLeader waits until some replica leads, or ctx ends.
func (s *Store) WaitLeader(ctx context.Context) (api.Replica, error) {
	for {
		if r, ok := s.Leader(); ok {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return api.Replica{}, fmt.Errorf("no replica leads the fabric: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Replicas lists the live replicas.
func (s *Store) Replicas(ctx context.Context) ([]api.Replica, error) {
	return s.replicaC.list(ctx, nil)
}

// SelfStatus reports this replica's etcd member (for an external cluster,
// the member its client reaches first).
func (s *Store) SelfStatus(ctx context.Context) (api.MemberStatus, error) {
	ep := "embedded"
	if eps := s.cli.Endpoints(); len(eps) > 0 {
		ep = eps[0]
	}
	r, err := s.cli.Status(ctx, ep)
	if err != nil {
		return api.MemberStatus{}, fmt.Errorf("etcd status: %w", err)
	}
	return api.MemberStatus{
		ID: memberID(r.Header.MemberId), Healthy: len(r.Errors) == 0, Error: strings.Join(r.Errors, "; "),
		RaftLeader: r.Leader == r.Header.MemberId, RaftIndex: r.RaftIndex, AppliedIndex: r.RaftAppliedIndex,
		DBSize: r.DbSize, DBInUse: r.DbSizeInUse, Revision: r.Header.Revision, Learner: r.IsLearner,
	}, nil
}

func memberID(id uint64) string { return strconv.FormatUint(id, 16) }

// Members lists the etcd cluster's members (names, IDs, peer URLs only).
func (s *Store) Members(ctx context.Context) (clusterID string, ms []api.MemberStatus, err error) {
	r, err := s.cli.MemberList(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("listing members: %w", err)
	}
	for _, m := range r.Members {
		ms = append(ms, api.MemberStatus{Name: m.Name, ID: memberID(m.ID), PeerURLs: m.PeerURLs, Learner: m.IsLearner})
	}
	slices.SortFunc(ms, func(a, b api.MemberStatus) int { return strings.Compare(a.Name, b.Name) })
	return memberID(r.Header.ClusterId), ms, nil
}

// AddMember adds a member for a new replica and says how to start it:
// the initial cluster it must be given, with itself in it.
func (s *Store) AddMember(ctx context.Context, name, peerURL string) (api.MemberAdded, error) {
	if err := validName(name); err != nil {
		return api.MemberAdded{}, err
	}
	if err := ValidPeerURL(peerURL); err != nil {
		return api.MemberAdded{}, err
	}
	_, ms, err := s.Members(ctx)
	if err != nil {
		return api.MemberAdded{}, err
	}
	for _, m := range ms {
		if m.Name == name {
			return api.MemberAdded{}, fmt.Errorf("member %s: %w (remove it first: loom cluster remove %s)", name, ErrExists, name)
		}
		if slices.Contains(m.PeerURLs, peerURL) {
			return api.MemberAdded{}, fmt.Errorf("peer URL %s is member %s's: %w", peerURL, cmpName(m), ErrExists)
		}
	}
	r, err := s.cli.MemberAdd(ctx, []string{peerURL})
	if err != nil {
		return api.MemberAdded{}, fmt.Errorf("adding member %s: %w", name, err)
	}
	var parts []string
	for _, m := range r.Members {
		n := m.Name
		if m.ID == r.Member.ID {
			n = name
		}
		if n == "" { // added earlier and never started: it cannot be named here
			continue
		}
		for _, p := range m.PeerURLs {
			parts = append(parts, n+"="+p)
		}
	}
	ic := strings.Join(parts, ",")
	return api.MemberAdded{Name: name, ID: memberID(r.Member.ID), InitialCluster: ic,
		Flags: []string{"--name=" + name, "--peer-url=" + peerURL, "--initial-cluster=" + ic, "--join"}}, nil
}

func cmpName(m api.MemberStatus) string {
	if m.Name == "" {
		return m.ID + " (never started)"
	}
	return m.Name
}

// RemoveMember removes a replica's member by name (or ID, for one that
// never started). The cluster refuses to remove a member if that would
// lose its quorum's data (etcd's own check).
func (s *Store) RemoveMember(ctx context.Context, name string) error {
	r, err := s.cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("listing members: %w", err)
	}
	for _, m := range r.Members {
		if m.Name == name || memberID(m.ID) == name {
			if _, err := s.cli.MemberRemove(ctx, m.ID); err != nil {
				return fmt.Errorf("removing member %s: %w", name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("member %s: %w", name, ErrNotFound)
}

// validName accepts a replica name: letters, digits, '-', '_', '.'.
func validName(n string) error {
	if n == "" || len(n) > 63 {
		return fmt.Errorf("replica name %q: want 1 to 63 characters", n)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("replica name %q: only letters, digits, '-', '_' and '.'", n)
		}
	}
	return nil
}

// ValidPeerURL checks a member's peer URL: http://HOST:PORT.
func ValidPeerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("peer URL %q: want http://HOST:PORT", s)
	}
	return nil
}

// ValidName checks a replica name (see AddMember).
func ValidName(n string) error { return validName(n) }

// Defrag policy: a member's file is defragmented when at least this big
// and less than half in use.
const (
	defragMinBytes = 64 << 20
	defragEvery    = 10 * time.Minute
)

// NeedsDefrag is the maintenance decision for one member's status.
func NeedsDefrag(size, inUse int64) bool {
	return size >= defragMinBytes && inUse < size/2
}

// Maintain defragments this replica's own member when it needs it (etcd
// compacts by itself: see Open), until ctx ends. Each replica looks after
// its own, so the cluster never has two members blocked at once unless
// their schedules collide.
func (s *Store) Maintain(ctx context.Context, log *slog.Logger) error {
	if s.etcd == nil {
		return nil // an external cluster is its operator's to look after
	}
	retry.Every(ctx, defragEvery, func() {
		st, err := s.SelfStatus(ctx)
		if err != nil || !NeedsDefrag(st.DBSize, st.DBInUse) {
			return
		}
		start := time.Now()
		if _, err := s.cli.Defragment(ctx, "embedded"); err != nil {
			log.Warn("store: defragmenting", "err", err)
			return
		}
		log.Info("store: defragmented", "before", st.DBSize, "in_use", st.DBInUse, "took", time.Since(start))
	})
	return nil
}
