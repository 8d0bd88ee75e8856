// Package cmdline reads Loom's settings from the kernel command line:
//
//	loom.fabric=URL[,URL...]  where loomd's API is (required): one URL a
//	                     replica, tried in turn (see client.Client)
//	loom.token=TOKEN     the enrollment token (optional: loomd puts it in
//	                     the seed appended to the initramfs, package seed)
//	loom.bootmac=MAC     the interface the machine booted from (optional)
//	loom.vcpus=N         host OS: the vCPUs it offers its guests (optional;
//	                     default its CPUs, more overcommits them)
//
// Values may be double-quoted. Unknown parameters are ignored.
package cmdline

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/loomfabric/loom/fabric/api"
)

// Config is what the maintenance agent needs from the command line.
type Config struct {
	Fabric  string
	Token   string
	BootMAC string // "" when not given
	VCPUs   int    // 0 when not given
}

// Split splits a command line into key/value pairs, honouring double
// quotes. A bare word has an empty value.
func Split(s string) [][2]string {
	var out [][2]string
	var cur strings.Builder
	inQuote := false
	flush := func() {
		if cur.Len() == 0 {
			return
		}
		k, v, _ := strings.Cut(cur.String(), "=")
		out = append(out, [2]string{k, v})
		cur.Reset()
	}
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			flush()
		default:
			cur.WriteRune(r)
		}
	}
	flush()
	return out
}

// Parse extracts and checks Loom's settings.
func Parse(s string) (Config, error) {
	var c Config
	for _, kv := range Split(s) {
		switch kv[0] {
		case "loom.fabric":
			c.Fabric = kv[1]
		case "loom.token":
			c.Token = kv[1]
		case "loom.bootmac":
			c.BootMAC = kv[1]
		case "loom.vcpus":
			c.VCPUs = -1
			if n, err := strconv.Atoi(kv[1]); err == nil && n > 0 && n <= api.MaxGuestVCPUs {
				c.VCPUs = n
			}
		}
	}
	var errs []error
	if c.VCPUs < 0 {
		errs = append(errs, fmt.Errorf("loom.vcpus: want 1 to %d", api.MaxGuestVCPUs))
	}
	if c.Fabric == "" {
		errs = append(errs, errors.New("loom.fabric= is missing"))
	} else {
		for _, f := range strings.Split(c.Fabric, ",") {
			if u, err := url.Parse(f); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("loom.fabric=%q: %q is not an http(s) URL", c.Fabric, f))
			}
		}
	}
	if c.BootMAC != "" {
		hw, err := net.ParseMAC(c.BootMAC)
		if err != nil {
			errs = append(errs, fmt.Errorf("loom.bootmac=%q: %w", c.BootMAC, err))
		} else {
			c.BootMAC = hw.String()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("kernel command line: %w", err)
	}
	return c, nil
}

// Read is the kernel command line: given when it is set (tests, --fabric
// runs), else /proc/cmdline.
func Read(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return "", fmt.Errorf("reading kernel command line: %w", err)
	}
	return string(b), nil
}
