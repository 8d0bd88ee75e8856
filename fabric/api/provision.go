package api

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Profile says how to provision a host: which disk, which image, and what
// to add to the host kernel's command line. The layout is fixed (see
// agent/disk): partition 1 "loom-host" holds the image, partition 2
// "loom-data" fills the rest.
type Profile struct {
	Name string `json:"name"`
	// Image names a stored image (a filesystem with boot/vmlinuz and
	// boot/initramfs.cpio.xz).
	Image string `json:"image"`
	// Disk is the rule that picks the target disk: "path:/dev/vda",
	// "serial:S", or "first:SIZE" (the first non-removable disk of at
	// least SIZE, e.g. "first:8GiB"). Default "first:1GiB".
	Disk string `json:"disk,omitempty"`
	// KernelArgs are appended to the host kernel's command line.
	KernelArgs string `json:"kernelArgs,omitempty"`
	// Boot is how an imaged node boots when it starts from the network:
	// "kexec" (the default: the maintenance OS loads the host kernel from
	// the disk, so images need no boot loader), "local" (iPXE exits to the
	// firmware's next boot device: the disk's own boot loader), or
	// "custom" (iPXE boots Kernel and Initrd, http(s) URLs, with
	// KernelArgs).
	Boot   string `json:"boot,omitempty"`
	Kernel string `json:"kernel,omitempty"`
	Initrd string `json:"initrd,omitempty"`
	// Wipe is how the target disk is wiped before it is partitioned:
	// signatures (the default: first and last MiB), discard, zero or
	// secure (see WipeModes).
	Wipe string `json:"wipe,omitempty"`
}

// Wipe modes (Profile.Wipe, and decommissioning).
const (
	WipeSignatures = "signatures" // partition tables and signatures only
	WipeDiscard    = "discard"    // BLKDISCARD the disk
	WipeZero       = "zero"       // BLKZEROOUT the disk
	WipeSecure     = "secure"     // NVMe format with user data erase
	WipeStrongest  = "strongest"  // secure where offered, else zero (decommission)
)

// WipeModes are the modes a profile may name.
var WipeModes = []string{WipeSignatures, WipeDiscard, WipeZero, WipeSecure}

// How imaged nodes boot (Profile.Boot), and what netboot serves
// (BootChoice.Kind): BootMaintenance is the maintenance OS.
const (
	BootMaintenance = "maintenance"
	BootKexec       = "kexec"
	BootLocal       = "local"
	BootCustom      = "custom"
)

// BootChoice is what a node's netboot script boots.
type BootChoice struct {
	Kind string
	// Kernel, Initrd and Args are set for BootCustom; Args also for
	// BootKexec (the profile's KernelArgs travel with the goal instead).
	Kernel, Initrd, Args string
}

var profileNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName says whether s is fit to name a profile, credential or rack:
// 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit.
func ValidName(s string) bool { return profileNameRE.MatchString(s) }

// DefaultDisk is the disk rule of a profile that names none.
const DefaultDisk = "first:1GiB"

// Default fills what p leaves unset: the disk rule.
func (p *Profile) Default() {
	if p.Disk == "" {
		p.Disk = DefaultDisk
	}
}

// Validate checks a profile (after Default); the error names the field
// that is wrong.
func (p Profile) Validate() error {
	var errs []error
	if !profileNameRE.MatchString(p.Name) {
		errs = append(errs, fmt.Errorf("name: %q: want 1-63 of a-z 0-9 . _ -", p.Name))
	}
	if p.Image == "" {
		errs = append(errs, errors.New("image: required"))
	}
	if _, err := ParseDiskRule(p.Disk); err != nil {
		errs = append(errs, fmt.Errorf("disk: %w", err))
	}
	if strings.ContainsAny(p.KernelArgs, "\n\r\x00") {
		errs = append(errs, errors.New("kernelArgs: must be one line"))
	}
	if p.Wipe != "" && !slices.Contains(WipeModes, p.Wipe) {
		errs = append(errs, fmt.Errorf("wipe: %q: want one of %s", p.Wipe, strings.Join(WipeModes, ", ")))
	}
	switch p.Boot {
	case "", BootKexec, BootLocal:
		if p.Kernel != "" || p.Initrd != "" {
			errs = append(errs, fmt.Errorf("kernel, initrd: only with boot %s", BootCustom))
		}
	case BootCustom:
		if err := bootURL(p.Kernel); err != nil {
			errs = append(errs, fmt.Errorf("kernel: %w", err))
		}
		if p.Initrd != "" {
			if err := bootURL(p.Initrd); err != nil {
				errs = append(errs, fmt.Errorf("initrd: %w", err))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("boot: %q: want %s, %s or %s", p.Boot, BootKexec, BootLocal, BootCustom))
	}
	return errors.Join(errs...)
}

// bootURL checks a URL iPXE is to fetch.
func bootURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return errors.New("required with boot custom (an http or https URL)")
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("%q: want an http or https URL", s)
	case strings.ContainsAny(s, " \t\n\r"):
		return fmt.Errorf("%q: no spaces", s)
	}
	return nil
}

// DiskRule picks a disk from an inventory.
type DiskRule struct {
	Kind    string // "path", "serial" or "first"
	Value   string
	MinSize uint64
}

// ParseDiskRule parses "path:/dev/X", "serial:S" or "first:SIZE".
func ParseDiskRule(s string) (DiskRule, error) {
	kind, val, ok := strings.Cut(s, ":")
	if !ok || val == "" {
		return DiskRule{}, fmt.Errorf("%q: want path:/dev/NAME, serial:SERIAL or first:SIZE", s)
	}
	switch kind {
	case "path":
		if !strings.HasPrefix(val, "/dev/") {
			return DiskRule{}, fmt.Errorf("%q: path must start with /dev/", s)
		}
		return DiskRule{Kind: kind, Value: val}, nil
	case "serial":
		return DiskRule{Kind: kind, Value: val}, nil
	case "first":
		n, err := ParseSize(val)
		if err != nil {
			return DiskRule{}, fmt.Errorf("%q: %w", s, err)
		}
		return DiskRule{Kind: kind, MinSize: n}, nil
	}
	return DiskRule{}, fmt.Errorf("%q: unknown rule %q (want path, serial or first)", s, kind)
}

// ParseSize parses "8GiB", "512MiB", "1TiB", "4096" (bytes).
func ParseSize(s string) (uint64, error) {
	units := []struct {
		suffix string
		mult   uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("size %q: want a number with KiB, MiB, GiB or TiB", s)
			}
			return n * u.mult, nil
		}
	}
	return 0, fmt.Errorf("size %q: want a number with KiB, MiB, GiB or TiB", s)
}

// Select returns the disk the rule picks from disks (in inventory order).
func (r DiskRule) Select(disks []Disk) (Disk, error) {
	for _, d := range disks {
		switch r.Kind {
		case "path":
			if "/dev/"+d.Name == r.Value {
				return d, nil
			}
		case "serial":
			if d.Serial == r.Value {
				return d, nil
			}
		case "first":
			if !d.Removable && d.SizeBytes >= r.MinSize {
				return d, nil
			}
		}
	}
	return Disk{}, fmt.Errorf("no disk matches %s:%s (disks: %s)", r.Kind, r.Value+sizeText(r.MinSize), diskList(disks))
}

func sizeText(n uint64) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%dMiB", n>>20)
}

func diskList(ds []Disk) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%s %dMiB", d.Name, d.SizeBytes>>20))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// Action is what a node's goal tells its maintenance agent to do.
type Action string

// Goal actions.
const (
	ActionNone      Action = "none"      // stay in maintenance, heartbeat
	ActionProvision Action = "provision" // image the host partition, then boot it
	ActionBootHost  Action = "boot-host" // the host partition is good: boot it
	ActionWipe      Action = "wipe"      // decommission: erase every disk (strongest mode), report
)

// Goal is a node's goal state: GET /v1/nodes/{id}/goal?incarnation=N&wait=30s
// answers 200 with a Goal whose Incarnation differs from N, or 304 when
// nothing changed within the wait.
type Goal struct {
	Incarnation int64     `json:"incarnation"`
	Action      Action    `json:"action"`
	Profile     *Profile  `json:"profile,omitempty"`
	Image       *Manifest `json:"image,omitempty"`
	// ImageURL is where the image blob is served (with Range support).
	ImageURL string `json:"imageURL,omitempty"`
	// Provision is the provisioning generation this goal asks for; the agent
	// reports it back when it has imaged it.
	Provision int64 `json:"provision,omitempty"`
	// VMs are the guests a host is to run (host mode).
	VMs []GoalVM `json:"vms,omitempty"`
}

// Progress is imaging progress as the agent reports it.
type Progress struct {
	Bytes      uint64  `json:"bytes"`
	Total      uint64  `json:"total"`
	BytesPerS  float64 `json:"bytesPerSecond,omitempty"`
	ETASeconds float64 `json:"etaSeconds,omitempty"`
}

// ProvisionRequest is the body of POST /v1/nodes/{id}/provision.
type ProvisionRequest struct {
	// Profile names the profile to image the node with.
	Profile string `json:"profile"`
}
