package loomd

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loomfabric/loom/agent/retry"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/server"
	"github.com/loomfabric/loom/fabric/store"
)

// The replicated control plane: every replica embeds an etcd member and
// serves reads, the goal long-polls, DHCP and the netboot files; one, the
// leader (store.Lead), runs the reconcilers and takes the writes, which
// the others forward to it.

// forwarder passes writes (any method but GET, HEAD and OPTIONS) to the
// leader and serves the rest itself.
type forwarder struct {
	st    *store.Store
	self  string
	local http.Handler
	log   *slog.Logger
	// wait is how long a write waits for a leader to be elected.
	wait time.Duration
	// tls is how it reaches the leader: with this replica's certificate,
	// which makes the leader believe the node certificate it passes on.
	tls *tls.Config

	mu      sync.Mutex
	proxies map[string]*httputil.ReverseProxy
}

func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		if leaderFresh(r) && r.Header.Get(api.ForwardedHeader) == "" {
			if l, ok := f.st.Leader(); ok && l.Name != f.self {
				if p, err := f.proxy(l.API); err == nil {
					r.Header.Set(api.ForwardedHeader, f.self)
					p.ServeHTTP(w, r)
					return
				}
			}
		}
		f.local.ServeHTTP(w, r)
		return
	}
	leader, err := f.leader(r.Context())
	if err != nil {
		unavailable(w, fmt.Sprintf("no replica leads the fabric after %v (an election under way, or a majority of the replicas down): retry", f.wait))
		return
	}
	w.Header().Set(api.LeaderHeader, leader.API)
	if leader.Name == f.self {
		f.local.ServeHTTP(w, r)
		return
	}
	if by := r.Header.Get(api.ForwardedHeader); by != "" {
		unavailable(w, fmt.Sprintf("replica %s forwarded this write to %s, which no longer leads (%s does): retry", by, f.self, leader.Name))
		return
	}
	r.Header.Set(api.ForwardedHeader, f.self)
	p, err := f.proxy(leader.API)
	if err != nil {
		unavailable(w, fmt.Sprintf("leader %s: %v", leader.Name, err))
		return
	}
	p.ServeHTTP(w, r)
}

// leader waits up to f.wait for a leader to be known: another replica,
// or this one once its writes are fenced as the leader's (its key shows
// in the copy a moment before Lead has the fence).
func (f *forwarder) leader(ctx context.Context) (api.Replica, error) {
	ctx, cancel := context.WithTimeout(ctx, f.wait)
	defer cancel()
	for {
		l, err := f.st.WaitLeader(ctx)
		if err != nil {
			return l, err
		}
		if l.Name != f.self || f.st.Leading() {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return l, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// leaderFresh says whether a read is the leader's to answer: nodes, whose
// last heartbeat and imaging progress live in its memory. Served here if
// the leader does not answer.
func leaderFresh(r *http.Request) bool {
	p := r.URL.Path
	return (p == "/v1/nodes" || strings.HasPrefix(p, "/v1/nodes/")) && !strings.HasSuffix(p, "/goal") &&
		!strings.HasPrefix(p, "/v1/nodes/register")
}

func (f *forwarder) proxy(base string) (*httputil.ReverseProxy, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.proxies[base]; p != nil {
		return p, nil
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("API URL %q: not a URL", base)
	}
	p := &httputil.ReverseProxy{
		// Every replica's agents' writes come through here: keep their
		// connections (the default keeps 2 idle per host, and a burst
		// would open new ones by the thousand).
		Transport: &http.Transport{Proxy: nil, MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 90 * time.Second,
			DialContext:     (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig: f.tls, ForceAttemptHTTP2: false},
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			// The node's certificate, as this replica's handshake verified
			// it (never a header the client sent).
			pr.Out.Header.Del(api.ClientCertHeader)
			if t := pr.In.TLS; t != nil && len(t.VerifiedChains) > 0 {
				pr.Out.Header.Set(api.ClientCertHeader, base64.StdEncoding.EncodeToString(t.VerifiedChains[0][0].Raw))
			}
			pr.SetXForwarded() // the audit log names the client, not this replica
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1, // long answers (a blob) stream through
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				r.Header.Del(api.ForwardedHeader)
				f.local.ServeHTTP(w, r) // the leader's view was wanted; this one's will do
				return
			}
			f.log.Warn("forwarding a write to the leader", "leader", base, "path", r.URL.Path, "err", err)
			unavailable(w, fmt.Sprintf("the leader at %s did not answer (%v): retry; a new one is elected within seconds unless a majority of the replicas is down", base, err))
		},
	}
	if f.proxies == nil {
		f.proxies = map[string]*httputil.ReverseProxy{}
	}
	f.proxies[base] = p
	return p, nil
}

// unavailable answers 503 with a JSON error and Retry-After: the client
// may try again, here or on another replica.
func unavailable(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = fmt.Fprintf(w, "{%q: %q}\n", "error", msg) // the status is sent; a client gone is not ours to report
}

// watchLeader deposes a leader whose process is gone: while another
// replica leads, its API is dialled every interval; refused twice in a
// row (nothing listens: the process died, its host is up), its lease is
// revoked so that the next leader is elected at once rather than when
// the lease runs out (a leader that is paused, or cut off, answers no
// dial at all and keeps its lease until it expires). Deposing a live
// leader by mistake costs an election, never a wrong write: writes are
// fenced.
func (f *forwarder) watchLeader(ctx context.Context, interval time.Duration) error {
	refused := map[string]int{}
	retry.Every(ctx, interval, func() {
		l, ok := f.st.Leader()
		if !ok || l.Name == f.self {
			clear(refused)
			return
		}
		u, err := url.Parse(l.API)
		if err != nil || u.Host == "" {
			return
		}
		d := net.Dialer{Timeout: interval}
		conn, err := d.DialContext(ctx, "tcp", u.Host)
		if err == nil {
			_ = conn.Close() // a probe
			delete(refused, l.API)
			return
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return // a timeout says nothing sure: the lease decides
		}
		if refused[l.API]++; refused[l.API] < 2 {
			return
		}
		if err := f.st.Depose(ctx, l.Name); err != nil {
			f.log.Warn("deposing a leader whose API refuses connections", "leader", l.Name, "err", err)
			return
		}
		f.log.Warn("deposed the leader: its API refuses connections (its process is gone)", "leader", l.Name, "api", l.API)
		delete(refused, l.API)
	})
	return nil
}

// cluster serves /v1/cluster: the members with each one's status, asked
// of its own replica.
type cluster struct {
	st   *store.Store
	self string
	api  string
	tls  *tls.Config // how it calls the other replicas
}

// Self is this replica's member.
func (c *cluster) Self(ctx context.Context) (api.MemberStatus, error) {
	m, err := c.st.SelfStatus(ctx)
	m.Name, m.API = c.self, c.api
	if l, ok := c.st.Leader(); ok && l.Name == c.self {
		m.Leader = true
	}
	return m, err
}

// Status lists the members: each one's figures from its replica's
// GET /v1/cluster/self (token is the caller's, passed on).
func (c *cluster) Status(ctx context.Context, token string) (api.ClusterStatus, error) {
	id, ms, err := c.st.Members(ctx)
	if err != nil {
		return api.ClusterStatus{}, err
	}
	reps, err := c.st.Replicas(store.Relaxed(ctx))
	if err != nil {
		return api.ClusterStatus{}, err
	}
	apiOf := map[string]string{}
	for _, r := range reps {
		apiOf[r.Name] = r.API
	}
	out := api.ClusterStatus{ClusterID: id, Members: ms}
	if l, ok := c.st.Leader(); ok {
		out.Leader = l.Name
	}
	var wg sync.WaitGroup
	for i := range out.Members {
		m := &out.Members[i]
		m.API = apiOf[m.Name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			var got api.MemberStatus
			var err error
			switch {
			case m.Name == c.self:
				got, err = c.Self(ctx)
			case m.Name == "":
				err = errors.New("added but never started")
			case m.API == "":
				err = errors.New("no loomd replica runs it (down, or not started yet)")
			default:
				got, err = (&client.Client{BaseURL: m.API, Token: token, TLS: c.tls}).ClusterSelf(ctx)
			}
			if err != nil {
				m.Healthy, m.Error = false, err.Error()
				return
			}
			got.PeerURLs, got.Learner = m.PeerURLs, m.Learner
			*m = got
		}()
	}
	wg.Wait()
	var top uint64
	for _, m := range out.Members {
		top = max(top, m.RaftIndex)
	}
	for i := range out.Members {
		if out.Members[i].Healthy {
			out.Members[i].Lag = top - out.Members[i].RaftIndex
		}
	}
	return out, nil
}

// Add adds a member for a new replica.
func (c *cluster) Add(ctx context.Context, m api.MemberAdd) (api.MemberAdded, error) {
	return c.st.AddMember(ctx, m.Name, m.PeerURL)
}

// Remove removes a replica's member.
func (c *cluster) Remove(ctx context.Context, name string) error {
	if name == c.self {
		return fmt.Errorf("%w: replica %s cannot remove its own member (ask another replica, or stop this one first)", server.ErrRefused, name)
	}
	return c.st.RemoveMember(ctx, name)
}

// sharedToken makes the token in file path the cluster's: the first
// replica's token is stored, and every replica's file holds it.
func sharedToken(ctx context.Context, st *store.Store, path string) (string, error) {
	local, err := token(path)
	if err != nil {
		return "", err
	}
	shared, err := st.SharedSecret(ctx, strings.TrimSuffix(filepath.Base(path), ".token"), local)
	if err != nil {
		return "", err
	}
	if shared != local {
		if err := os.WriteFile(path, []byte(shared+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("writing the cluster's token to %s: %w", path, err)
		}
	}
	return shared, nil
}

// fetchBlob opens an image's blob on another live replica (the first that
// has it), for a replica whose disk lacks it (uploads land on the leader).
func fetchBlob(st *store.Store, self, token string, peers *tls.Config) func(ctx context.Context, m api.Manifest) (io.ReadCloser, error) {
	return func(ctx context.Context, m api.Manifest) (io.ReadCloser, error) {
		reps, err := st.Replicas(store.Relaxed(ctx))
		if err != nil {
			return nil, err
		}
		var errs []error
		for _, r := range reps {
			if r.Name == self {
				continue
			}
			c := &client.Client{BaseURL: r.API, Token: token, TLS: peers}
			body, err := c.OpenBlob(ctx, "/v1/images/"+url.PathEscape(m.Name)+"/blob", http.Header{api.PeerFetchHeader: {self}})
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.Name, err))
				continue
			}
			return body, nil
		}
		if len(errs) == 0 {
			return nil, errors.New("no other replica is up")
		}
		return nil, errors.Join(errs...)
	}
}

// Audit retention: the newest AuditKeep records, none older than
// AuditMaxAge; the leader trims every AuditTrimEvery (and the event
// history, to Config.EventKeep and EventMaxAge, every EventTrimEvery).
const (
	AuditKeep      = 100000
	AuditMaxAge    = 90 * 24 * time.Hour
	AuditTrimEvery = time.Minute
	EventTrimEvery = 5 * time.Second
)

func (c *Config) trimLogs(ctx context.Context, st *store.Store, log *slog.Logger) error {
	last := time.Time{}
	retry.Every(ctx, EventTrimEvery, func() {
		trim := func(what string, f func(context.Context, int, time.Duration, time.Time) (int, error), keep int, age time.Duration) {
			n, err := f(ctx, keep, age, time.Now())
			if err != nil && ctx.Err() == nil {
				log.Warn("trimming "+what, "err", err)
			}
			if n > 0 {
				log.Info(what+" trimmed", "removed", n)
			}
		}
		trim("the event history", st.TrimEvents, c.eventKeep(), c.eventMaxAge())
		if time.Since(last) >= AuditTrimEvery {
			last = time.Now()
			trim("the audit log", st.TrimAudit, AuditKeep, AuditMaxAge)
		}
	})
	return nil
}

func (c *Config) eventKeep() int { return cmp.Or(c.EventKeep, 50000) }

func (c *Config) eventMaxAge() time.Duration { return cmp.Or(c.EventMaxAge, 30*24*time.Hour) }
