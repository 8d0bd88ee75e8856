package service

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/fabric/api"
)

// Endpoints are the services' endpoints: one TCP listener per web role,
// in loomd, at the endpoint address and the port the manifest names. Each
// spreads connections round-robin over the role's instances that are
// Ready and not being upgraded, dialing the host port that carries
// connections into each guest (VM.Endpoint). An instance leaves the
// rotation as soon as its host reports it unhealthy or an upgrade takes
// its update domain; a host port that refuses a connection is skipped for
// a few seconds and the next instance tried, so a client sees a failure
// only when no instance answers.
//
// They run in loomd because loomd has the one current view of every
// instance's health and upgrade state (the store); a balancer on every
// host would need that view copied to each host and would still need one
// address clients know. The cost is that endpoint traffic goes through
// loomd: it is a byte pipe, measured by bench channel's ingress path.
type Endpoints struct {
	st   Store
	ip   string
	log  *slog.Logger
	dial func(ctx context.Context, addr string) (net.Conn, error)

	mu  sync.Mutex
	eps map[string]*endpoint // by service/role
}

// EndpointBackoff is how long a host port that refused a connection is
// left out of the rotation.
const EndpointBackoff = 5 * time.Second

// NewEndpoints returns the endpoints, listening on ip ("" for every
// address); Run keeps them in step with the store.
func NewEndpoints(st Store, ip string, log *slog.Logger) *Endpoints {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &Endpoints{st: st, ip: ip, log: log, eps: map[string]*endpoint{},
		dial: func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }}
}

type endpoint struct {
	svc, role string
	port      int
	ln        net.Listener
	err       error // why it does not listen

	mu       sync.Mutex
	backends []string // host:port of the instances in rotation
	next     int
	skip     map[string]time.Time // refused until
	conns    int64
}

// Run refreshes the endpoints every interval until ctx ends, then closes
// them.
func (e *Endpoints) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := e.Refresh(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("service endpoints: refresh", "err", err)
		}
		select {
		case <-ctx.Done():
			e.mu.Lock()
			for k, ep := range e.eps {
				ep.close()
				delete(e.eps, k)
			}
			e.mu.Unlock()
			return nil
		case <-t.C:
		}
	}
}

// Refresh opens the endpoints of new web roles, closes those of roles
// gone, and sets each one's rotation from the instances.
func (e *Endpoints) Refresh(ctx context.Context) error {
	svcs, err := e.st.Services(ctx)
	if err != nil {
		return err
	}
	want := map[string]api.ServiceRole{}
	for _, s := range svcs {
		for _, r := range s.Roles {
			if r.Endpoint != nil {
				want[s.Name+"/"+r.Name] = r
			}
		}
	}
	var vs []api.VM
	if len(want) > 0 {
		vs, err = e.st.VMsWhere(ctx, func(v *api.VM) bool { _, ok := want[v.Service+"/"+v.Role]; return ok && InRotation(*v) })
		if err != nil {
			return err
		}
	}
	rotation := map[string][]string{}
	for _, v := range vs {
		if InRotation(v) {
			k := v.Service + "/" + v.Role
			rotation[k] = append(rotation[k], v.Endpoint)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, ep := range e.eps {
		if r, ok := want[k]; !ok || r.Endpoint.Port != ep.port {
			ep.close()
			delete(e.eps, k)
		}
	}
	for k, r := range want {
		ep := e.eps[k]
		if ep == nil || (ep.ln == nil && ep.err != nil) {
			svc, role, _ := strings.Cut(k, "/")
			ep = &endpoint{svc: svc, role: role, port: r.Endpoint.Port, skip: map[string]time.Time{}}
			ln, err := net.Listen("tcp", net.JoinHostPort(e.ip, strconv.Itoa(r.Endpoint.Port)))
			if err != nil {
				ep.err = err
				if old := e.eps[k]; old == nil || old.err == nil || old.err.Error() != err.Error() {
					e.log.Warn("service endpoint not listening", "service", svc, "role", role, "err", err)
				}
			} else {
				ep.ln = ln
				e.log.Info("service endpoint listening", "service", svc, "role", role, "addr", ln.Addr().String())
				go e.serve(ep)
			}
			e.eps[k] = ep
		}
		b := rotation[k]
		slices.Sort(b)
		ep.mu.Lock()
		ep.backends = b
		ep.mu.Unlock()
	}
	return nil
}

// InRotation says whether an instance takes connections from its role's
// endpoint: Ready (its role healthy), reachable at its host's port, not
// stopping or going, and not being upgraded (asked to reboot into a new
// version it has not yet come back from).
func InRotation(v api.VM) bool {
	return v.Service != "" && v.Endpoint != "" && v.State == api.VMStateRunning &&
		v.Desired == api.VMRunning && v.Rebooted >= v.RebootGen
}

func (ep *endpoint) close() {
	if ep.ln != nil {
		_ = ep.ln.Close() // its accept loop ends
	}
}

func (e *Endpoints) serve(ep *endpoint) {
	for {
		c, err := ep.ln.Accept()
		if err != nil {
			return
		}
		go e.carry(ep, c)
	}
}

// EndpointWait is how long a connection to an endpoint with no instance
// in rotation waits for one before it is closed.
const EndpointWait = 2 * time.Second

// awaitBackend polls ep's rotation for up to d.
func (e *Endpoints) awaitBackend(ep *endpoint, d time.Duration) string {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if addr := ep.pick(time.Now()); addr != "" {
			return addr
		}
	}
	return ""
}

// carry takes one client connection to an instance: the next in the
// rotation that accepts it.
func (e *Endpoints) carry(ep *endpoint, c net.Conn) {
	defer c.Close()
	ep.mu.Lock()
	ep.conns++
	n := len(ep.backends)
	ep.mu.Unlock()
	for range max(n, 1) {
		addr := ep.pick(time.Now())
		if addr == "" && n == 0 {
			// None in rotation yet: instances may have just become Ready
			// (the rotation follows them within a refresh); hold the
			// connection that long rather than drop it.
			addr = e.awaitBackend(ep, EndpointWait)
		}
		if addr == "" {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		b, err := e.dial(ctx, addr)
		cancel()
		if err != nil {
			e.log.Info("service endpoint: instance refused; trying the next", "service", ep.svc, "role", ep.role, "addr", addr, "err", err)
			ep.mu.Lock()
			ep.skip[addr] = time.Now().Add(EndpointBackoff)
			ep.mu.Unlock()
			continue
		}
		defer b.Close()
		channel.Pipe(c, b)
		return
	}
	e.log.Warn("service endpoint: no instance to take a connection", "service", ep.svc, "role", ep.role)
}

// pick is the next backend round-robin, skipping those that refused lately.
func (ep *endpoint) pick(now time.Time) string {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	for range len(ep.backends) {
		addr := ep.backends[ep.next%len(ep.backends)]
		ep.next++
		if now.Before(ep.skip[addr]) {
			continue
		}
		delete(ep.skip, addr)
		return addr
	}
	return ""
}

// Status describes each endpoint of svc (its address, or why it has none,
// and how many instances are in rotation).
func (e *Endpoints) Status(svc string) []api.EndpointStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []api.EndpointStatus
	for _, ep := range e.eps {
		if ep.svc != svc {
			continue
		}
		st := api.EndpointStatus{Role: ep.role}
		if ep.ln != nil {
			st.Address = ep.ln.Addr().String()
		} else if ep.err != nil {
			st.Error = ep.err.Error()
		}
		ep.mu.Lock()
		st.InRotation, st.Connections = len(ep.backends), ep.conns
		ep.mu.Unlock()
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b api.EndpointStatus) int { return strings.Compare(a.Role, b.Role) })
	return out
}
