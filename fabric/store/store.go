// Package store keeps the fabric's state in etcd: embedded in loomd as a
// single member by default (a data directory, nothing to install), or an
// external cluster.
//
// Key layout (all values JSON unless noted):
//
//	/loom/v1/nodes/<id>         api.Node (without LastSeen, which lives in memory)
//	/loom/v1/index/mac/<mac>    node id (plain text)
//	/loom/v1/index/uuid/<uuid>  node id (plain text)
//	/loom/v1/creds/<id>         sha256 hex of the node's credential (plain text)
//	/loom/v1/leases/<mac>       api.Lease
//
// Raw heartbeats never become keys: only phase transitions are written.
package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"github.com/loomfabric/loom/fabric/api"
)

// ErrNotFound is returned when a key does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when a create finds its key already taken.
var ErrExists = errors.New("already exists")

// MaxTxnOps is how many operations one transaction may carry; it bounds
// the DHCP server's group commits.
const MaxTxnOps = 1024

// MaxRequestBytes bounds one request to the embedded member (an external
// cluster wants --max-request-bytes as large).
const MaxRequestBytes = 16 << 20

const prefix = "/loom/v1/"

// Config says where the state lives.
type Config struct {
	// DataDir holds the embedded etcd member ("etcd" below it). Required
	// unless Endpoints is set.
	DataDir string
	// Endpoints, if set, names an external etcd cluster instead of the
	// embedded member.
	Endpoints []string
	// StartTimeout bounds how long the embedded member may take to become
	// ready. Default 60s; a member of a cluster waits for its quorum.
	StartTimeout time.Duration

	// The embedded member as one of a replicated control plane (all
	// optional: by default a single member on loopback ports).
	//
	// Name is the member's (and its loomd replica's) name. Default "loomd".
	Name string
	// PeerURL is where the member listens for its peers and is reached
	// by them. Default: a free loopback port (no peers).
	PeerURL string
	// ClientURL is where the member serves etcd clients. Default: a free
	// loopback port (loomd itself talks to it in-process).
	ClientURL string
	// InitialCluster is "name=peerURL,..." of the members bootstrapping
	// together, this one included. Default: this member alone. Read only
	// on the first start (an empty data directory).
	InitialCluster string
	// Join starts the member into a running cluster that has added it
	// (AddMember), rather than bootstrapping a new one.
	Join bool
	// ElectionTimeout is the member's raft election timeout (its
	// heartbeat a tenth of it). Default etcd's, 1s; every member of a
	// cluster wants the same.
	ElectionTimeout time.Duration
}

// Store is the fabric's state.
type Store struct {
	cli   *clientv3.Client
	etcd  *embed.Etcd
	fence atomic.Pointer[fence] // see txn
	// observe, if set, is told each etcd request's time (Observe).
	observe atomic.Pointer[func(string, time.Duration)]

	// Watch-fed copies of what a fleet reads most (see cached).
	nodeC     *cached[api.Node]
	vmC       *cached[api.VM]
	credC     *cached[string]
	imgC      *cached[api.Manifest]
	svcC      *cached[api.Service]
	leaderC   *cached[api.Replica]
	replicaC  *cached[api.Replica]
	tokC      *cached[StoredToken]
	followers []follower
	wctx      context.Context // the copies' watch
	stop      context.CancelFunc
	wg        sync.WaitGroup
	relist    chan struct{}

	fmu     sync.Mutex
	rev     int64         // the store revision the copies reflect
	moved   chan struct{} // closed, and replaced, whenever rev moves
	stopped error         // set once the copies have stopped for good

	rmu   sync.Mutex
	rnext *revRead // the next revision read, for the callers queued on it
	rbusy bool
	asked time.Time // the last progress request
}

// start begins following the cached kinds.
func (s *Store) start(log *slog.Logger) *Store {
	s.cli.KV = timedKV{KV: s.cli.KV, obs: &s.observe}
	s.nodeC = newCached(s, prefix+"nodes/", "node", decodeJSON[api.Node], cloneNode, nil)
	s.vmC = newCached(s, prefix+"vms/", "VM", decodeJSON[api.VM], cloneVM, func(v *api.VM) string { return v.Node })
	s.imgC = newCached(s, prefix+"images/", "image", decodeJSON[api.Manifest], cloneManifest, nil)
	s.svcC = newCached(s, prefix+"services/", "service", decodeJSON[api.Service], cloneService, nil)
	s.leaderC = newCached(s, leaderPrefix, "leader key", decodeJSON[api.Replica], nil, nil)
	s.replicaC = newCached(s, replicaPrefix, "replica", decodeJSON[api.Replica], nil, nil)
	s.tokC = newCached(s, prefix+"tokens/", "token", decodeJSON[StoredToken], nil, nil)
	s.credC = newCached(s, prefix+"creds/", "credential of node", func(b []byte) (string, error) { return string(b), nil }, nil, nil)
	s.run(log)
	return s
}

// run starts the watch that keeps the copies current (Close stops it).
func (s *Store) run(log *slog.Logger) {
	s.wctx, s.stop = context.WithCancel(context.Background())
	s.moved, s.relist, s.stopped = make(chan struct{}), make(chan struct{}), nil
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.follow(s.wctx, log)
	}()
}

func decodeJSON[T any](b []byte) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

// Open starts the embedded etcd member (or connects to Endpoints).
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Endpoints) > 0 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second, Context: ctx})
		if err != nil {
			return nil, fmt.Errorf("connecting to etcd %v: %w", cfg.Endpoints, err)
		}
		return (&Store{cli: cli}).start(log), nil
	}
	if cfg.DataDir == "" {
		return nil, errors.New("store: DataDir is required for the embedded etcd")
	}
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	dir := filepath.Join(cfg.DataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	ec := embed.NewConfig()
	ec.Name = cmp.Or(cfg.Name, "loomd")
	if err := validName(ec.Name); err != nil {
		return nil, err
	}
	ec.Dir = dir
	ec.LogLevel = "error"
	ec.MaxTxnOps = MaxTxnOps
	// A transaction of MaxTxnOps node and VM documents is a few MiB
	// (etcd's default request bound is 1.5 MiB).
	ec.MaxRequestBytes = MaxRequestBytes
	ec.AutoCompactionMode = "revision"
	ec.AutoCompactionRetention = "10000"
	// loomd talks to its member in-process (v3client); the listeners exist
	// only because etcd insists, so they sit on free loopback ports.
	peer, err := urlOrFree("peer", cfg.PeerURL)
	if err != nil {
		return nil, err
	}
	client, err := urlOrFree("client", cfg.ClientURL)
	if err != nil {
		return nil, err
	}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	if cfg.InitialCluster != "" {
		ec.InitialCluster = cfg.InitialCluster
	}
	if cfg.Join {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	if cfg.ElectionTimeout > 0 {
		ec.ElectionMs = uint(cfg.ElectionTimeout / time.Millisecond)
		ec.TickMs = max(1, ec.ElectionMs/10)
	}
	fresh := !exists(filepath.Join(dir, "member"))
	e, err := embed.StartEtcd(ec)
	if err != nil {
		if fresh && strings.Contains(err.Error(), "already been bootstrapped") {
			return nil, fmt.Errorf("replica %s: its data directory %s is empty but the running cluster already has a member %s: "+
				"a replica that lost its data must be removed and added again (loom cluster remove %s; loom cluster add %s --peer-url %s; "+
				"then start it with the flags that prints): %w", ec.Name, dir, ec.Name, ec.Name, ec.Name, peer.String(), err)
		}
		return nil, fmt.Errorf("starting embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	case <-time.After(timeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: not ready after %v", dir, timeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	log.Info("store ready", "etcd", dir)
	return (&Store{cli: v3client.New(e.Server), etcd: e}).start(log), nil
}

// urlOrFree parses an http URL with a port, or finds a free loopback one.
func urlOrFree(what, s string) (url.URL, error) {
	if s == "" {
		return freeURL()
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Port() == "" || u.Path != "" {
		return url.URL{}, fmt.Errorf("etcd %s URL %q: want http://HOST:PORT", what, s)
	}
	return *u, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func freeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, fmt.Errorf("finding a free port for etcd: %w", err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}, nil
}

// Close stops the embedded member.
func (s *Store) Close() error {
	s.stop()
	s.wg.Wait()
	err := s.cli.Close()
	if s.etcd != nil {
		s.etcd.Close()
		if errors.Is(err, context.Canceled) {
			err = nil // the in-process client always says so
		}
	}
	return err
}

// get reads one key; ErrNotFound if absent.
func (s *Store) get(ctx context.Context, key string) ([]byte, int64, error) {
	r, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", key, err)
	}
	if len(r.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%s: %w", strings.TrimPrefix(key, prefix), ErrNotFound)
	}
	return r.Kvs[0].Value, r.Kvs[0].ModRevision, nil
}

// Client is the store's etcd client, for tests and tools that look
// beneath the API (writes through it bypass the fence).
func (s *Store) Client() *clientv3.Client { return s.cli }
