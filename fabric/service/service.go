package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// ErrBadRequest marks a deploy or scale refused for what it asks (the
// package does not exist, the role is unknown).
var ErrBadRequest = errors.New("bad request")

// ManagerStore is what the service API needs of the store; *store.Store
// has it.
type ManagerStore interface {
	Store
	CreateService(ctx context.Context, s api.Service) error
	Service(ctx context.Context, name string) (api.Service, error)
	UpdateService(ctx context.Context, name string, fn func(*api.Service) error) (api.Service, error)
	DeleteService(ctx context.Context, name string) error
	Image(ctx context.Context, name string) (api.Manifest, error)
	Nodes(ctx context.Context) ([]api.Node, error)
	Usage(ctx context.Context, sinceNS int64, service string, limit int) ([]api.UsageRecord, error)
}

// MaxUsageRecords bounds one usage query.
const MaxUsageRecords = 100000

// Manager is the services API over the store; its Controller does the
// placing.
type Manager struct {
	st  ManagerStore
	ctl *Controller
	eps *Endpoints
	now func() time.Time
}

// NewManager returns the services API; ctl is kicked after each change,
// eps (if not nil) says where the endpoints are.
func NewManager(st ManagerStore, ctl *Controller, eps *Endpoints) *Manager {
	return &Manager{st: st, ctl: ctl, eps: eps, now: time.Now}
}

// withEndpoints adds where s's endpoints are now.
func (m *Manager) withEndpoints(s api.Service) api.Service {
	if m.eps != nil {
		s.Endpoints = m.eps.Status(s.Name)
	}
	return s
}

// Deploy parses a manifest and stores the service; the controller then
// places its instances. Nothing is stored if anything is wrong.
func (m *Manager) Deploy(ctx context.Context, manifest []byte) (api.Service, error) {
	s, err := Parse(manifest)
	if err != nil {
		return api.Service{}, err
	}
	if err := m.packagesExist(ctx, s); err != nil {
		return api.Service{}, err
	}
	if err := m.portsFree(ctx, s); err != nil {
		return api.Service{}, err
	}
	s.Created = m.now().UTC()
	if err := m.st.CreateService(ctx, s); err != nil {
		if errors.Is(err, store.ErrExists) {
			return api.Service{}, fmt.Errorf("service %s: %w (scale it, or delete it first)", s.Name, err)
		}
		return api.Service{}, err
	}
	m.ctl.Kick()
	return s, nil
}

// portsFree says whether the endpoint ports of s's roles are free of
// every other service's.
func (m *Manager) portsFree(ctx context.Context, s api.Service) error {
	others, err := m.st.Services(ctx)
	if err != nil {
		return err
	}
	for _, r := range s.Roles {
		for _, o := range others {
			for _, or := range o.Roles {
				if r.Endpoint != nil && or.Endpoint != nil && r.Endpoint.Port == or.Endpoint.Port && o.Name != s.Name {
					return fmt.Errorf("%w: role %s: endpoint port %d is taken by role %s of service %s", ErrBadRequest, r.Name, r.Endpoint.Port, or.Name, o.Name)
				}
			}
		}
	}
	return nil
}

// Services lists every service.
func (m *Manager) Services(ctx context.Context) ([]api.Service, error) {
	ss, err := m.st.Services(ctx)
	for i := range ss {
		ss[i] = m.withEndpoints(ss[i])
	}
	return ss, err
}

// Service reads one.
func (m *Manager) Service(ctx context.Context, name string) (api.Service, error) {
	s, err := m.st.Service(ctx, name)
	return m.withEndpoints(s), err
}

// Scale sets a role's instance count.
func (m *Manager) Scale(ctx context.Context, name string, req api.ScaleRequest) (api.Service, error) {
	if err := req.Validate(); err != nil {
		return api.Service{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	s, err := m.st.UpdateService(ctx, name, func(s *api.Service) error {
		for i := range s.Roles {
			if s.Roles[i].Name == req.Role {
				s.Roles[i].Instances = req.Instances
				return nil
			}
		}
		return fmt.Errorf("%w: service %s has no role %q", ErrBadRequest, name, req.Role)
	})
	if err == nil {
		m.ctl.Kick()
	}
	return s, err
}

// Upgrade starts walking a service's update domains towards a new version
// (its manifest; mode, if set, overrides the manifest's upgrade mode).
func (m *Manager) Upgrade(ctx context.Context, name string, req api.UpgradeRequest) (api.Service, error) {
	next, err := Parse([]byte(req.Manifest))
	if err != nil {
		return api.Service{}, err
	}
	switch req.Mode {
	case "", api.UpgradeAuto, api.UpgradeManual:
	default:
		return api.Service{}, fmt.Errorf("%w: mode: %q: want auto or manual", ErrBadRequest, req.Mode)
	}
	if next.Name != name {
		return api.Service{}, fmt.Errorf("%w: the manifest is of service %q, not %s", ErrBadRequest, next.Name, name)
	}
	if err := m.packagesExist(ctx, next); err != nil {
		return api.Service{}, err
	}
	if err := m.portsFree(ctx, next); err != nil {
		return api.Service{}, err
	}
	s, err := m.st.UpdateService(ctx, name, func(s *api.Service) error {
		up, err := StartWalk(*s, next, req.Mode, m.now().UTC())
		*s = up
		return err
	})
	if err == nil {
		m.ctl.Kick()
	}
	return m.withEndpoints(s), err
}

// Walk lets a manual upgrade do its next update domain.
func (m *Manager) Walk(ctx context.Context, name string) (api.Service, error) {
	s, err := m.st.UpdateService(ctx, name, func(s *api.Service) error {
		switch {
		case s.Walk == nil:
			return fmt.Errorf("%w: service %s has no upgrade to walk (loom service upgrade)", ErrBadRequest, name)
		case s.Walk.State != api.WalkWaiting:
			return fmt.Errorf("%w: service %s's upgrade is %s, not waiting for a walk", ErrBadRequest, name, s.Walk.State)
		}
		s.Walk.State = api.WalkUpgrading
		s.Walk.Seq++
		s.Walk.History = append(s.Walk.History, api.WalkEvent{Time: m.now().UTC(), Domain: s.Walk.Order[0], Event: "walk", Note: "loom service walk"})
		return nil
	})
	if err == nil {
		m.ctl.Kick()
	}
	return m.withEndpoints(s), err
}

// packagesExist checks every role's package is a stored image.
func (m *Manager) packagesExist(ctx context.Context, s api.Service) error {
	for _, r := range s.Roles {
		if _, err := m.st.Image(ctx, r.Package); store.IsNotFound(err) {
			return fmt.Errorf("%w: role %s: package %q is not a stored image (loom image add)", ErrBadRequest, r.Name, r.Package)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// Usage reads the usage records of periods ending at or after since, of
// one service ("" for all).
func (m *Manager) Usage(ctx context.Context, since time.Time, service string) ([]api.UsageRecord, error) {
	return m.st.Usage(ctx, since.UnixNano(), service, MaxUsageRecords)
}

// Delete removes a service; the controller deletes its instances.
func (m *Manager) Delete(ctx context.Context, name string) error {
	if err := m.st.DeleteService(ctx, name); err != nil {
		return err
	}
	m.ctl.Kick()
	return nil
}

// Instances lists the instances of one service ("" for all), by service,
// role and update domain.
func (m *Manager) Instances(ctx context.Context, service string) ([]api.Instance, error) {
	if service != "" {
		if _, err := m.st.Service(ctx, service); err != nil {
			return nil, err
		}
	}
	nodes, err := m.st.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	rack := map[string]string{}
	for _, n := range nodes {
		rack[n.ID] = n.Rack
	}
	vs, err := m.st.VMs(ctx)
	if err != nil {
		return nil, err
	}
	out := []api.Instance{}
	for _, v := range vs {
		if v.Service == "" || (service != "" && v.Service != service) {
			continue
		}
		out = append(out, api.InstanceOf(v, rack[v.Node]))
	}
	slices.SortFunc(out, func(a, b api.Instance) int {
		switch {
		case a.Service != b.Service:
			return cmp.Compare(a.Service, b.Service)
		case a.Role != b.Role:
			return cmp.Compare(a.Role, b.Role)
		case a.UpdateDomain != b.UpdateDomain:
			return a.UpdateDomain - b.UpdateDomain
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// ServicesUsing names a service with a role whose package is image, or ""
// (an image in use is not removed).
func ServicesUsing(ctx context.Context, list func(context.Context) ([]api.Service, error), image string) (string, error) {
	ss, err := list(ctx)
	if err != nil {
		return "", err
	}
	for _, s := range ss {
		for _, r := range s.Roles {
			if r.Package == image {
				return "service " + s.Name, nil
			}
		}
	}
	return "", nil
}
