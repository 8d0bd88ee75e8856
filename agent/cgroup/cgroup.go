// Package cgroup apportions a guest's share of the host: one control group
// per guest with a CPU quota (its vCPUs' worth), a memory ceiling and an
// optional I/O bandwidth cap on the data disk, and reads back its usage.
//
// cgroup v2 (the unified hierarchy at /sys/fs/cgroup, as the Loom host OS
// mounts it) is used when present: Root/loom/NAME with cpu.max,
// memory.max, io.max. On a machine still on the v1 hierarchies (cpu,
// memory, blkio mounted separately), the same limits go to
// cpu.cfs_quota_us, memory.limit_in_bytes and
// blkio.throttle.{read,write}_bps_device, each group created below the
// agent's own group in that hierarchy.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits for one group.
type Limits struct {
	// CPUs is the CPU quota in whole CPUs (0 = none).
	CPUs int
	// MilliCPUs is a quota in thousandths of a CPU, in place of CPUs
	// (0 = CPUs decides).
	MilliCPUs int
	// CPUPeriod is the period the quota is counted over (default 100ms;
	// shorter means shorter stalls once a period's quota is spent).
	CPUPeriod time.Duration
	// MemoryBytes is the memory ceiling (0 = none).
	MemoryBytes uint64
	// IODevice is "MAJ:MIN" of the disk to cap and IOBytesPerSec the cap
	// on reads and writes each (0 = none).
	IODevice      string
	IOBytesPerSec uint64
}

// Usage is what a group has used.
type Usage struct {
	CPUSeconds  float64
	MemoryBytes uint64
}

// Group is one control group (in one or several hierarchies).
type Group struct {
	v2   string            // path in the unified hierarchy, or ""
	v1   map[string]string // controller → path
	Name string
}

// Root is where cgroup file systems are mounted. A variable for tests.
var Root = "/sys/fs/cgroup"

// New creates (or reopens) the group loom/name and applies l.
func New(name string, l Limits) (*Group, error) {
	g := &Group{Name: name}
	if _, err := os.Stat(filepath.Join(Root, "cgroup.controllers")); err == nil {
		base := filepath.Join(Root, "loom")
		if err := os.MkdirAll(base, 0o755); err != nil {
			return nil, err
		}
		// Delegate the controllers down to loom/ and its children.
		for _, dir := range []string{Root, base} {
			for _, c := range []string{"+cpu", "+memory", "+io"} {
				_ = os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(c), 0) // a controller the kernel lacks stays off; its limit then fails visibly
			}
		}
		g.v2 = filepath.Join(base, name)
		if err := os.MkdirAll(g.v2, 0o755); err != nil {
			return nil, err
		}
	} else {
		g.v1 = map[string]string{}
		for _, c := range []string{"cpu", "cpuacct", "memory", "blkio"} {
			mnt := filepath.Join(Root, c)
			if _, err := os.Stat(filepath.Join(mnt, "cgroup.procs")); err != nil {
				continue
			}
			p := filepath.Join(mnt, selfPath(c), "loom", name)
			if err := os.MkdirAll(p, 0o755); err != nil {
				return nil, fmt.Errorf("cgroup %s: %w", c, err)
			}
			g.v1[c] = p
		}
		if len(g.v1) == 0 {
			return nil, errors.New("cgroup: neither the unified hierarchy nor the v1 cpu/memory hierarchies are mounted")
		}
	}
	// A limit that cannot be set is an error, but the group is returned
	// with whatever limits did apply.
	return g, g.Set(l)
}

// selfPath is this process's group in a v1 hierarchy (from /proc/self/cgroup).
func selfPath(controller string) string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	defer func() { _ = f.Close() }() // read only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2]
			}
		}
	}
	return "/"
}

func write(dir, file, val string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
		return fmt.Errorf("cgroup: %s=%q: %w", filepath.Join(dir, file), val, err)
	}
	return nil
}

// cpuQuota is l's CPU quota and period in microseconds; quota 0 is none.
func (l Limits) cpuQuota() (quota, period int) {
	period = 100000
	if l.CPUPeriod > 0 {
		period = int(l.CPUPeriod.Microseconds())
	}
	switch {
	case l.MilliCPUs > 0:
		quota = max(l.MilliCPUs*period/1000, 1000) // the kernel's least quota is 1ms
	case l.CPUs > 0:
		quota = l.CPUs * period
	}
	return quota, period
}

// Set applies limits.
func (g *Group) Set(l Limits) error {
	quota, period := l.cpuQuota()
	var errs []error
	if g.v2 != "" {
		if quota > 0 {
			errs = append(errs, write(g.v2, "cpu.max", fmt.Sprintf("%d %d", quota, period)))
		}
		if l.MemoryBytes > 0 {
			errs = append(errs, write(g.v2, "memory.max", strconv.FormatUint(l.MemoryBytes, 10)))
		}
		if l.IODevice != "" && l.IOBytesPerSec > 0 {
			errs = append(errs, write(g.v2, "io.max", fmt.Sprintf("%s rbps=%d wbps=%d", l.IODevice, l.IOBytesPerSec, l.IOBytesPerSec)))
		}
		return errors.Join(errs...)
	}
	if p, ok := g.v1["cpu"]; ok && quota > 0 {
		errs = append(errs, write(p, "cpu.cfs_period_us", strconv.Itoa(period)), write(p, "cpu.cfs_quota_us", strconv.Itoa(quota)))
	}
	if p, ok := g.v1["memory"]; ok && l.MemoryBytes > 0 {
		errs = append(errs, write(p, "memory.limit_in_bytes", strconv.FormatUint(l.MemoryBytes, 10)))
	}
	if p, ok := g.v1["blkio"]; ok && l.IODevice != "" && l.IOBytesPerSec > 0 {
		v := fmt.Sprintf("%s %d", l.IODevice, l.IOBytesPerSec)
		errs = append(errs, write(p, "blkio.throttle.read_bps_device", v), write(p, "blkio.throttle.write_bps_device", v))
	}
	return errors.Join(errs...)
}

// Add moves a process (all its threads) into the group.
func (g *Group) Add(pid int) error {
	var errs []error
	for _, p := range g.paths() {
		errs = append(errs, write(p, "cgroup.procs", strconv.Itoa(pid)))
	}
	return errors.Join(errs...)
}

// Has reports whether pid is in the group.
func (g *Group) Has(pid int) bool {
	for _, p := range g.paths() {
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return false
		}
		if !strings.Contains("\n"+string(b), "\n"+strconv.Itoa(pid)+"\n") {
			return false
		}
	}
	return true
}

func (g *Group) paths() []string {
	if g.v2 != "" {
		return []string{g.v2}
	}
	var out []string
	for _, p := range g.v1 {
		out = append(out, p)
	}
	return out
}

// Usage reads CPU time and current memory.
func (g *Group) Usage() Usage {
	var u Usage
	if g.v2 != "" {
		u.CPUSeconds = float64(statField(filepath.Join(g.v2, "cpu.stat"), "usage_usec")) / 1e6
		u.MemoryBytes = readUint(filepath.Join(g.v2, "memory.current"))
		return u
	}
	for _, c := range []string{"cpuacct", "cpu"} { // cpuacct may be co-mounted with cpu
		if p, ok := g.v1[c]; ok && fileExists(filepath.Join(p, "cpuacct.usage")) {
			u.CPUSeconds = float64(readUint(filepath.Join(p, "cpuacct.usage"))) / 1e9
			break
		}
	}
	if p, ok := g.v1["memory"]; ok {
		u.MemoryBytes = readUint(filepath.Join(p, "memory.usage_in_bytes"))
	}
	return u
}

// Remove deletes the group. Its processes must be gone; a group whose last
// process has only just exited may be busy for a moment, so Remove retries
// for up to a second.
func (g *Group) Remove() error {
	var errs []error
	for _, p := range g.paths() {
		err := os.Remove(p)
		for i := 0; i < 20 && errors.Is(err, syscall.EBUSY); i++ {
			time.Sleep(50 * time.Millisecond)
			err = os.Remove(p)
		}
		if err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func readUint(p string) uint64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func statField(p, key string) uint64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
