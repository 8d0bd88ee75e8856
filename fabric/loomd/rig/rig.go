// Package rig runs loomd replicas as separate processes on loopback, for
// the tests and the benchmark of the replicated control plane: start a
// cluster of n, kill -9, pause and resume a replica, restart it on its
// data directory, find the leader.
package rig

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/pki"
)

// Replica is one loomd process.
type Replica struct {
	Name string
	API  string // https://127.0.0.1:PORT
	Peer string // its etcd member's peer URL
	Data string
	Log  string
	// NS is the network namespace it runs in ("" the rig's own); Unix
	// then is its API socket, which the rig's clients use.
	NS   string
	Unix string
	bin  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Cluster is a set of replicas bootstrapped together.
type Cluster struct {
	Bin      string
	Dir      string
	Replicas []*Replica
	// Extra flags every replica gets.
	Extra []string
}

// Start runs n replicas of bin bootstrapping one cluster under dir, on
// loopback, and waits until every one answers and one leads.
func Start(ctx context.Context, bin, dir string, n int, extra ...string) (*Cluster, error) {
	var specs []Spec
	for i := range n {
		api, err := freePort()
		if err != nil {
			return nil, err
		}
		peer, err := freePort()
		if err != nil {
			return nil, err
		}
		specs = append(specs, Spec{Name: fmt.Sprintf("r%d", i+1), Listen: api, Peer: "http://" + peer, Extra: extra})
	}
	return StartSpecs(ctx, bin, dir, specs)
}

// Spec is one replica to start.
type Spec struct {
	Name string
	// Listen is its API's address (host:port); Peer its etcd peer URL.
	Listen, Peer string
	// NS, if set, is the network namespace it runs in; the rig then
	// reaches its API through a unix socket in dir.
	NS    string
	Extra []string
}

// StartSpecs runs the replicas specs describes, bootstrapping one
// cluster under dir, and waits until every one answers and one leads.
func StartSpecs(ctx context.Context, bin, dir string, specs []Spec) (*Cluster, error) {
	c := &Cluster{Bin: bin, Dir: dir}
	var ic []string
	for _, sp := range specs {
		ic = append(ic, sp.Name+"="+sp.Peer)
	}
	for _, sp := range specs {
		r := &Replica{bin: bin, Name: sp.Name, API: "https://" + sp.Listen, Peer: sp.Peer, NS: sp.NS,
			Data: filepath.Join(dir, sp.Name), Log: filepath.Join(dir, sp.Name+".log")}
		r.args = []string{"--name", r.Name, "--data-dir", r.Data, "--api", sp.Listen,
			"--peer-url", r.Peer, "--initial-cluster", strings.Join(ic, ",")}
		if sp.NS != "" {
			r.Unix = filepath.Join(dir, sp.Name+".sock")
			r.args = append(r.args, "--api-unix", r.Unix)
		}
		r.args = append(r.args, sp.Extra...)
		c.Replicas = append(c.Replicas, r)
		if err := r.start(); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx, 60*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }() // a probe
	return l.Addr().String(), nil
}

func (r *Replica) start() error {
	log, err := os.OpenFile(r.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }() // loomd writes through its own descriptor
	r.cmd = exec.Command(r.bin, r.args...)
	if r.NS != "" {
		r.cmd = exec.Command("ip", append([]string{"netns", "exec", r.NS, r.bin}, r.args...)...)
	}
	r.cmd.Stdout, r.cmd.Stderr = log, log
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return err
	}
	r.done = make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(r.done) }() // its exit is looked at through Running
	return nil
}

// Running says whether the replica's process is alive.
func (r *Replica) Running() bool {
	if r.done == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// PID is the replica's process ID.
func (r *Replica) PID() int { return r.cmd.Process.Pid }

// Token is the cluster's operator token as this replica's data
// directory holds it.
func (r *Replica) Token() string {
	b, _ := os.ReadFile(filepath.Join(r.Data, "operator.token")) // missing: not yet written
	return strings.TrimSpace(string(b))
}

// EnrollToken is the cluster's enrollment token.
func (r *Replica) EnrollToken() string {
	b, _ := os.ReadFile(filepath.Join(r.Data, "enroll.token")) // missing: not yet written
	return strings.TrimSpace(string(b))
}

// CA is the cluster's CA certificate as this replica's data directory
// holds it (nil before it is written).
func (r *Replica) CA() []byte {
	b, _ := os.ReadFile(filepath.Join(r.Data, "ca.pem")) // missing: not yet written
	return b
}

// tlsFor is a client TLS configuration trusting the CA (nil without one).
func tlsFor(ca []byte) *tls.Config {
	t, err := pki.ClientTLS(ca, nil)
	if err != nil {
		return nil
	}
	return t
}

// Client talks to this replica alone (no failover).
func (r *Replica) Client(token string) *client.Client {
	return &client.Client{BaseURL: r.URL(), Token: token, Failover: time.Nanosecond, TLS: tlsFor(r.CA())}
}

// URL is where the rig reaches the replica's API.
func (r *Replica) URL() string {
	if r.Unix != "" {
		return "unix://" + r.Unix
	}
	return r.API
}

// Kill sends SIGKILL and waits for the process to end.
func (r *Replica) Kill() {
	if r.Running() {
		_ = r.cmd.Process.Kill() // it may have died by itself just now
		<-r.done
	}
}

// Pause and Resume stop and continue the process (SIGSTOP, SIGCONT).
func (r *Replica) Pause() error  { return r.cmd.Process.Signal(syscall.SIGSTOP) }
func (r *Replica) Resume() error { return r.cmd.Process.Signal(syscall.SIGCONT) }

// Restart starts a killed replica again on its data directory.
func (c *Cluster) Restart(i int) error {
	r := c.Replicas[i]
	r.Kill()
	return r.start()
}

// Rejoin starts replica i again, on a fresh data directory, with the
// flags `loom cluster add` printed for it (its member added anew).
func (c *Cluster) Rejoin(i int, flags []string) error {
	r := c.Replicas[i]
	r.Kill()
	if err := os.RemoveAll(r.Data); err != nil {
		return err
	}
	r.args = append([]string{"--data-dir", r.Data, "--api", strings.TrimPrefix(r.API, "https://")}, flags...)
	if r.Unix != "" {
		r.args = append(r.args, "--api-unix", r.Unix)
	}
	return r.start()
}

// Wait waits for replica i's process to end by itself, up to d, and
// says whether it did.
func (r *Replica) Wait(d time.Duration) bool {
	select {
	case <-r.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Token is the operator token (every replica holds the same once up).
func (c *Cluster) Token() string {
	for _, r := range c.Replicas {
		if t := r.Token(); t != "" {
			return t
		}
	}
	return ""
}

// Client talks to every replica, failing over between them.
func (c *Cluster) Client() *client.Client {
	var urls []string
	for _, r := range c.Replicas {
		urls = append(urls, r.URL())
	}
	return &client.Client{BaseURL: strings.Join(urls, ","), Token: c.Token(), TLS: tlsFor(c.CA())}
}

// CA is the cluster's CA certificate (every replica holds the same).
func (c *Cluster) CA() []byte {
	for _, r := range c.Replicas {
		if b := r.CA(); len(b) > 0 {
			return b
		}
	}
	return nil
}

// URLs is every replica's API URL, comma-separated.
func (c *Cluster) URLs() string { return c.Client().BaseURL }

// Status asks the running replicas, in turn, for the cluster's status.
func (c *Cluster) Status(ctx context.Context) (api.ClusterStatus, error) {
	var errs []error
	for _, r := range c.Replicas {
		if !r.Running() {
			continue
		}
		s, err := r.Client(c.Token()).ClusterStatus(ctx)
		if err == nil {
			return s, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", r.Name, err))
	}
	return api.ClusterStatus{}, fmt.Errorf("no replica answered: %w", errors.Join(errs...))
}

// Leader is the index of the replica that leads, as the running ones
// agree (every one that answers names the same).
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	name := ""
	for _, r := range c.Replicas {
		if !r.Running() {
			continue
		}
		s, err := r.Client(c.Token()).ClusterSelf(ctx)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", r.Name, err)
		}
		if s.Leader {
			if name != "" {
				return -1, fmt.Errorf("both %s and %s say they lead", name, r.Name)
			}
			name = r.Name
		}
	}
	for i, r := range c.Replicas {
		if r.Name == name {
			return i, nil
		}
	}
	return -1, errors.New("no replica leads")
}

// WaitReady waits until every running replica answers and one leads.
func (c *Cluster) WaitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = ctx.Err(); err != nil {
			return err
		}
		if _, err = c.Leader(ctx); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("cluster not ready after %v: %w (logs in %s)", d, err, c.Dir)
}

// Close kills every replica.
func (c *Cluster) Close() {
	for _, r := range c.Replicas {
		r.Kill()
	}
}
