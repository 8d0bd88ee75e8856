// Package inventory takes a machine's hardware inventory from sysfs and
// procfs: CPUs, memory, DMI identity, NICs and disks.
//
// Everything is read below a root directory ("/" on a machine, a tree
// under testdata/ in tests). A missing optional file leaves its field
// empty; only an unreadable /proc/cpuinfo or memory size is an error.
package inventory

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/loomfabric/loom/fabric/api"
)

// Collect reads the inventory below root.
func Collect(root string) (api.Inventory, error) {
	var inv api.Inventory
	var err error
	if inv.CPU, err = cpu(root); err != nil {
		return inv, err
	}
	if inv.Memory, err = memory(root); err != nil {
		return inv, err
	}
	inv.DMI = dmi(root)
	if inv.NICs, err = nics(root); err != nil {
		return inv, err
	}
	if inv.Disks, err = disks(root); err != nil {
		return inv, err
	}
	return inv, nil
}

func read(root string, parts ...string) string {
	b, err := os.ReadFile(filepath.Join(append([]string{root}, parts...)...))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func cpu(root string) (api.CPU, error) {
	b, err := os.ReadFile(filepath.Join(root, "proc/cpuinfo"))
	if err != nil {
		return api.CPU{}, fmt.Errorf("inventory: %w", err)
	}
	var c api.CPU
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			c.Count++
		case "model name":
			if c.Model == "" {
				c.Model = strings.TrimSpace(v)
			}
		}
	}
	if c.Count == 0 {
		return c, fmt.Errorf("inventory: no processor in %s", filepath.Join(root, "proc/cpuinfo"))
	}
	return c, nil
}

// memory is the installed memory: the sum of the online memory blocks when
// the kernel exposes them (what the machine has), else MemTotal (what the
// kernel has left after its own reservations).
func memory(root string) (uint64, error) {
	dir := filepath.Join(root, "sys/devices/system/memory")
	if bs, err := strconv.ParseUint(read(dir, "block_size_bytes"), 16, 64); err == nil && bs > 0 {
		blocks, _ := filepath.Glob(filepath.Join(dir, "memory*"))
		var n uint64
		for _, b := range blocks {
			if read(b, "online") == "1" {
				n++
			}
		}
		if n > 0 {
			return n * bs, nil
		}
	}
	f, err := os.ReadFile(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0, fmt.Errorf("inventory: %w", err)
	}
	for _, line := range strings.Split(string(f), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("inventory: MemTotal %q: %w", rest, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("inventory: no MemTotal in %s", filepath.Join(root, "proc/meminfo"))
}

func dmi(root string) api.DMI {
	d := filepath.Join(root, "sys/class/dmi/id")
	return api.DMI{
		Vendor:  read(d, "sys_vendor"),
		Product: read(d, "product_name"),
		Serial:  read(d, "product_serial"),
		UUID:    strings.ToLower(read(d, "product_uuid")),
	}
}

// nics lists physical interfaces: those with a device behind them.
func nics(root string) ([]api.NIC, error) {
	dir := filepath.Join(root, "sys/class/net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("inventory: %w", err)
	}
	var out []api.NIC
	for _, e := range ents {
		name := e.Name()
		if _, err := os.Stat(filepath.Join(dir, name, "device")); err != nil {
			continue // lo, bridges, taps: not hardware
		}
		n := api.NIC{Name: name, MAC: read(dir, name, "address"), Link: read(dir, name, "carrier") == "1"}
		if s, err := strconv.Atoi(read(dir, name, "speed")); err == nil && s > 0 {
			n.SpeedMbps = s
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// disks lists whole block devices, skipping loop, ram, zram and dm.
func disks(root string) ([]api.Disk, error) {
	dir := filepath.Join(root, "sys/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("inventory: %w", err)
	}
	var out []api.Disk
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") ||
			strings.HasPrefix(name, "zram") || strings.HasPrefix(name, "dm-") || strings.HasPrefix(name, "sr") {
			continue
		}
		sectors, err := strconv.ParseUint(read(dir, name, "size"), 10, 64)
		if err != nil {
			continue
		}
		d := api.Disk{
			Name:       name,
			SizeBytes:  sectors * 512, // sysfs "size" is always in 512-byte units
			Model:      read(dir, name, "device", "model"),
			Serial:     read(dir, name, "serial"),
			Rotational: read(dir, name, "queue", "rotational") == "1",
			Removable:  read(dir, name, "removable") == "1",
		}
		if d.Serial == "" {
			d.Serial = read(dir, name, "device", "serial")
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
