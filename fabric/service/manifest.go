// Package service is Loom's service model: a manifest says "5 instances
// of my web role and 3 of my worker role", the scheduler places them over
// fault domains (racks) with update domains assigned round-robin, and the
// controller keeps that many in existence.
//
// A manifest (YAML):
//
//	name: guestbook
//	updateDomains: 5          # default 5
//	upgrade: auto             # auto (default) or manual
//	upgradeTimeout: 10m       # per update domain, then it is rolled back (default 10m)
//	roles:
//	  - name: web
//	    kind: web             # web (has an endpoint) or worker
//	    package: guestbook-web   # a stored image holding the role package
//	    instances: 5
//	    vcpus: 1              # default 1
//	    memory: 256MiB        # default 256MiB
//	    settings: {queue: entries}
//	    health: {path: /healthz, interval: 1s, timeout: 2s, failures: 1}   # overrides the package's; these defaults
//	    endpoint: {port: 80, protocol: http}   # web roles only
//	  - name: worker
//	    kind: worker
//	    package: guestbook-worker
//	    instances: 3
//
// A bad manifest is refused with every line and field that is wrong, and
// nothing of it is applied.
package service

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/loomfabric/loom/fabric/api"
)

// MaxManifest bounds a manifest's size.
const MaxManifest = 256 << 10

// manifest is the YAML document; api.Service is what is kept.
type manifest struct {
	Name           string         `yaml:"name"`
	UpdateDomains  *int           `yaml:"updateDomains"`
	Upgrade        string         `yaml:"upgrade"`
	UpgradeTimeout string         `yaml:"upgradeTimeout"`
	Roles          []manifestRole `yaml:"roles"`
}

type manifestRole struct {
	Name      string            `yaml:"name"`
	Kind      string            `yaml:"kind"`
	Package   string            `yaml:"package"`
	Instances *int              `yaml:"instances"`
	VCPUs     int               `yaml:"vcpus"`
	Memory    string            `yaml:"memory"`
	Settings  map[string]string `yaml:"settings"`
	Health    *struct {
		Path     string `yaml:"path"`
		Interval string `yaml:"interval"`
		Timeout  string `yaml:"timeout"`
		Failures int    `yaml:"failures"`
	} `yaml:"health"`
	Endpoint *struct {
		Port     int    `yaml:"port"`
		Protocol string `yaml:"protocol"`
	} `yaml:"endpoint"`
}

// Problem is one thing wrong in a manifest: where, and what.
type Problem struct {
	Line  int    // 0 when the field is missing altogether
	Field string // a path such as roles[1].instances
	Msg   string
}

func (p Problem) String() string {
	switch {
	case p.Line > 0 && p.Field != "":
		return fmt.Sprintf("line %d, %s: %s", p.Line, p.Field, p.Msg)
	case p.Line > 0:
		return fmt.Sprintf("line %d: %s", p.Line, p.Msg)
	case p.Field != "":
		return fmt.Sprintf("%s: %s", p.Field, p.Msg)
	}
	return p.Msg
}

// Problems is every problem of a refused manifest, by line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	if len(ps) == 1 {
		return "manifest: " + lines[0]
	}
	return fmt.Sprintf("manifest: %d problems:\n  %s", len(ps), strings.Join(lines, "\n  "))
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,39}$`)

// Parse reads a manifest. Its error is Problems: each with the line and
// field that is wrong.
func Parse(b []byte) (api.Service, error) {
	if len(b) > MaxManifest {
		return api.Service{}, Problems{{Msg: fmt.Sprintf("%d bytes: a manifest is at most %d", len(b), MaxManifest)}}
	}
	var m manifest
	if err := yaml.UnmarshalWithOptions(b, &m, yaml.Strict()); err != nil {
		return api.Service{}, Problems{decodeProblem(err)}
	}
	file, err := parser.ParseBytes(b, 0)
	if err != nil { // decoded above, so this does not happen
		return api.Service{}, Problems{decodeProblem(err)}
	}
	v := &validator{file: file}
	s := v.service(m)
	if len(v.problems) > 0 {
		slices.SortStableFunc(v.problems, func(a, b Problem) int { return a.Line - b.Line })
		return api.Service{}, v.problems
	}
	return s, nil
}

// decodeProblem turns the YAML library's error (syntax, unknown field,
// wrong type) into a Problem with its line.
func decodeProblem(err error) Problem {
	var ye yaml.Error
	if errors.As(err, &ye) {
		p := Problem{Msg: ye.GetMessage()}
		if t := ye.GetToken(); t != nil && t.Position != nil {
			p.Line = t.Position.Line
		}
		return p
	}
	return Problem{Msg: err.Error()}
}

type validator struct {
	file     *ast.File
	problems Problems
}

// bad records a problem at the field's path ("$.roles[1].instances"); its
// line is that of the field's value (or of the nearest parent present).
func (v *validator) bad(path, format string, a ...any) {
	field := strings.TrimPrefix(strings.TrimPrefix(path, "$"), ".")
	v.problems = append(v.problems, Problem{Line: v.line(path), Field: field, Msg: fmt.Sprintf(format, a...)})
}

func (v *validator) line(path string) int {
	for p := path; p != "$" && p != ""; {
		if yp, err := yaml.PathString(p); err == nil {
			if n, err := yp.FilterFile(v.file); err == nil && n != nil {
				if t := n.GetToken(); t != nil && t.Position != nil {
					return t.Position.Line
				}
			}
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

func (v *validator) service(m manifest) api.Service {
	s := api.Service{Name: m.Name, UpdateDomains: api.DefaultUpdateDomains, Upgrade: api.UpgradeAuto}
	if !nameRE.MatchString(m.Name) {
		v.bad("$.name", "%q: want lower-case letters, digits and '-', starting with a letter, at most 40", m.Name)
	}
	if m.UpdateDomains != nil {
		s.UpdateDomains = *m.UpdateDomains
		if s.UpdateDomains < 1 || s.UpdateDomains > api.MaxUpdateDomains {
			v.bad("$.updateDomains", "%d: want 1 to %d", s.UpdateDomains, api.MaxUpdateDomains)
		}
	}
	switch api.UpgradeMode(m.Upgrade) {
	case "":
	case api.UpgradeAuto, api.UpgradeManual:
		s.Upgrade = api.UpgradeMode(m.Upgrade)
	default:
		v.bad("$.upgrade", "%q: want auto or manual", m.Upgrade)
	}
	s.UpgradeTimeout = api.Duration(api.DefaultUpgradeTimeout)
	if m.UpgradeTimeout != "" {
		d, err := time.ParseDuration(m.UpgradeTimeout)
		switch {
		case err != nil:
			v.bad("$.upgradeTimeout", "%q: want a duration such as 10m", m.UpgradeTimeout)
		case d < time.Second || d > 24*time.Hour:
			v.bad("$.upgradeTimeout", "%v: want 1s to 24h", d)
		default:
			s.UpgradeTimeout = api.Duration(d)
		}
	}
	if len(m.Roles) == 0 {
		v.bad("$.roles", "a service needs at least one role")
	}
	if len(m.Roles) > api.MaxRoles {
		v.bad("$.roles", "%d roles: at most %d", len(m.Roles), api.MaxRoles)
	}
	seen := map[string]bool{}
	for i, r := range m.Roles {
		at := fmt.Sprintf("$.roles[%d]", i)
		if seen[r.Name] && r.Name != "" {
			v.bad(at+".name", "%q: a second role of that name", r.Name)
		}
		seen[r.Name] = true
		s.Roles = append(s.Roles, v.role(at, r))
	}
	return s
}

func (v *validator) role(at string, m manifestRole) api.ServiceRole {
	r := api.ServiceRole{Name: m.Name, Kind: api.RoleKind(m.Kind), Package: m.Package, VCPUs: m.VCPUs, Settings: m.Settings}
	if !nameRE.MatchString(m.Name) {
		v.bad(at+".name", "%q: want lower-case letters, digits and '-', starting with a letter, at most 40", m.Name)
	}
	switch r.Kind {
	case api.RoleWeb, api.RoleWorker:
	case "":
		v.bad(at+".kind", "required: web or worker")
	default:
		v.bad(at+".kind", "%q: want web or worker", m.Kind)
	}
	if m.Package == "" {
		v.bad(at+".package", "required: the stored image holding the role package")
	}
	if m.Instances == nil {
		v.bad(at+".instances", "required")
	} else if r.Instances = *m.Instances; r.Instances < 0 || r.Instances > api.MaxInstances {
		v.bad(at+".instances", "%d: want 0 to %d", r.Instances, api.MaxInstances)
	}
	// The VM request's own defaults and limits apply to each instance.
	req := api.VMRequest{VCPUs: m.VCPUs, Package: m.Package, Settings: m.Settings}
	if m.Memory != "" {
		b, err := api.ParseSize(m.Memory)
		switch {
		case err != nil:
			v.bad(at+".memory", "%v", err)
		case b%(1<<20) != 0:
			v.bad(at+".memory", "%q is not a whole number of MiB", m.Memory)
		default:
			req.MemoryMB = int(b >> 20)
		}
	}
	req.Default()
	r.VCPUs, r.MemoryMB = req.VCPUs, req.MemoryMB
	if err := req.Validate(); err != nil {
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			// "vcpus: 0: want 1 to 64": the field is the message's head.
			field, msg, _ := strings.Cut(e.Error(), ": ")
			switch field {
			case "package": // reported above
			case "vcpus", "settings":
				v.bad(at+"."+field, "%s", msg)
			case "memoryMB":
				v.bad(at+".memory", "%s", msg)
			default:
				v.bad(at, "%v", e)
			}
		}
	}
	if h := m.Health; h != nil {
		p := api.HealthProbe{Path: h.Path, Failures: h.Failures}
		for _, d := range []struct {
			field string
			in    string
			out   *api.Duration
		}{{"interval", h.Interval, &p.Interval}, {"timeout", h.Timeout, &p.Timeout}} {
			if d.in == "" {
				continue
			}
			if x, err := time.ParseDuration(d.in); err != nil || x <= 0 {
				v.bad(at+".health."+d.field, "%q: want a duration such as 5s", d.in)
				*d.out = api.Duration(api.DefaultProbeInterval) // reported; keep checking the rest
			} else {
				*d.out = api.Duration(x)
			}
		}
		p.Default()
		if err := p.Validate(); err != nil {
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				field, msg, _ := strings.Cut(e.Error(), ": ")
				v.bad(at+".health."+field, "%s", msg)
			}
		}
		r.Health = &p
	}
	switch e := m.Endpoint; {
	case e != nil && r.Kind == api.RoleWorker:
		v.bad(at+".endpoint", "a worker role has no endpoint")
	case e == nil && r.Kind == api.RoleWeb:
		v.bad(at+".endpoint", "required for a web role: {port: P, protocol: http|tcp}")
	case e != nil:
		r.Endpoint = &api.Endpoint{Port: e.Port, Protocol: e.Protocol}
		if e.Port < 1 || e.Port > 65535 {
			v.bad(at+".endpoint.port", "%d: want 1 to 65535", e.Port)
		}
		if r.Endpoint.Protocol == "" {
			r.Endpoint.Protocol = "http"
		} else if e.Protocol != "http" && e.Protocol != "tcp" {
			v.bad(at+".endpoint.protocol", "%q: want http or tcp", e.Protocol)
		}
	}
	return r
}
