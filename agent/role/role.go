// Package role reads role packages: a tar archive (optionally gzipped)
// holding the role's files and, at its top, loom-role.json:
//
//	{"name": "web", "exec": "web", "args": [], "port": 8080, "health": "/healthz"}
//
// exec is the program to run (a path inside the package), port the TCP
// port a web role listens on inside the guest (0 for a worker), health an
// optional HTTP path that answers 2xx while the role is healthy.
package role

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// SpecFile is the role description's name in a package.
const SpecFile = "loom-role.json"

// MaxSpec bounds loom-role.json.
const MaxSpec = 64 << 10

// Spec describes a role.
type Spec struct {
	Name   string   `json:"name"`
	Exec   string   `json:"exec"`
	Args   []string `json:"args,omitempty"`
	Port   int      `json:"port,omitempty"`
	Health string   `json:"health,omitempty"`
}

// Validate checks a spec; the error names the field.
func (s *Spec) Validate() error {
	var errs []error
	if s.Name == "" {
		errs = append(errs, errors.New("name: required"))
	}
	if s.Exec == "" || !safe(s.Exec) {
		errs = append(errs, fmt.Errorf("exec: %q: want a relative path inside the package", s.Exec))
	}
	if s.Port < 0 || s.Port > 65535 {
		errs = append(errs, fmt.Errorf("port: %d: want 0 (none) to 65535", s.Port))
	}
	if s.Health != "" && (!strings.HasPrefix(s.Health, "/") || s.Port == 0) {
		errs = append(errs, fmt.Errorf("health: %q: want an HTTP path starting with / (and a port)", s.Health))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", SpecFile, err)
	}
	return nil
}

// safe reports whether p stays inside the package directory.
func safe(p string) bool {
	c := path.Clean(p)
	return c != "." && !path.IsAbs(c) && c != ".." && !strings.HasPrefix(c, "../")
}

func open(file string) (*tar.Reader, io.Closer, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(f)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			_ = f.Close() // read only; the gzip error is reported
			return nil, nil, fmt.Errorf("role package %s: %w", file, err)
		}
		return tar.NewReader(zr), f, nil
	}
	return tar.NewReader(br), f, nil
}

// Read returns the spec of the package in file.
func Read(file string) (Spec, error) {
	return walk(file, "")
}

// Extract unpacks the package into dir and returns its spec. Entries that
// would land outside dir, links and devices are refused.
func Extract(file, dir string) (Spec, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Spec{}, err
	}
	return walk(file, dir)
}

func walk(file, dir string) (Spec, error) {
	tr, c, err := open(file)
	if err != nil {
		return Spec{}, err
	}
	defer func() { _ = c.Close() }() // read only
	var spec *Spec
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Spec{}, fmt.Errorf("role package %s: %w", file, err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if !safe(name) {
			return Spec{}, fmt.Errorf("role package %s: entry %q leaves the package", file, h.Name)
		}
		if name == SpecFile {
			var s Spec
			dec := json.NewDecoder(io.LimitReader(tr, MaxSpec))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&s); err != nil {
				return Spec{}, fmt.Errorf("role package %s: %s: %w", file, SpecFile, err)
			}
			if err := s.Validate(); err != nil {
				return Spec{}, fmt.Errorf("role package %s: %w", file, err)
			}
			spec = &s
			continue
		}
		if dir == "" {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return Spec{}, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return Spec{}, err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, os.FileMode(h.Mode)&0o755|0o600)
			if err != nil {
				return Spec{}, err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return Spec{}, fmt.Errorf("role package %s: %s: %w", file, name, err)
			}
		default:
			return Spec{}, fmt.Errorf("role package %s: entry %q: only files and directories are allowed", file, h.Name)
		}
	}
	if spec == nil {
		return Spec{}, fmt.Errorf("role package %s: no %s at its top", file, SpecFile)
	}
	return *spec, nil
}
