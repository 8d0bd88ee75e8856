// Command netboot benchmarks what a rack needs of Loom as it boots, against
// the usual tools, in the same run:
//
//   - TFTP: the first stage (ipxe.efi) to N concurrent clients asking for
//     blksize 1468 and windowsize 16, from loomd's TFTP server and from
//     Debian's tftpd-hpa (each serves what it supports of the request).
//     Every transfer is checked against the file.
//   - proxyDHCP: DISCOVER → OFFER exchanges per second with PXE clients
//     (perfdhcp -i, option 60 PXEClient), loomd --dhcp-mode proxy against
//     dnsmasq in proxy mode, both answering boot information only.
//   - image serving: N concurrent verified image pulls (the agent's
//     writer, sha256 per range, into sparse files) from loomd, against
//     nginx serving the same raw file to N curl clients.
//
// Servers run in one network namespace and clients in another, joined by
// a veth pair (TFTP and DHCP; servers on core 0, clients on core 1), or
// on loopback (HTTP); each measurement is
// the median of -rounds, the tools interleaved. Needs root and the packages
// from `make deps` (tftpd-hpa, dnsmasq-base, kea-admin for perfdhcp,
// nginx-light).
//
// Last line: bench netboot: vs_tftpd_hpa=… vs_dnsmasq_proxy=… rack_mbps=…
// vs_nginx=… (ratios > 1 mean Loom was faster).
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/loomfabric/loom/agent/cgroup"
	"github.com/loomfabric/loom/scripts/lab"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "tftp-clients" {
		if err := tftpClients(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "tftp-clients:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench netboot:", err)
		os.Exit(1)
	}
}

const (
	srvAddr = "198.18.0.1"
	cliAddr = "198.18.0.2"
)

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("netboot", flag.ContinueOnError)
	clients := fs.Int("clients", 32, "concurrent clients (TFTP and image pulls)")
	rounds := fs.Int("rounds", 3, "rounds per tool (median taken)")
	period := fs.Int("period", 5, "seconds per perfdhcp run")
	load := fs.Int("load", 40000, "offered proxyDHCP load, DISCOVERs/s (above what either server completes here)")
	imageMiB := fs.Int("image", 64, "MiB of the image pulled")
	loomd := fs.String("loomd", "build/bin/loomd", "loomd binary")
	first := fs.String("first-stage", "/usr/lib/ipxe/ipxe.efi", "the file served over TFTP")
	serverMilli := fs.Int("proxy-cpu", 500, "thousandths of a CPU each proxyDHCP server gets")
	verbose := fs.Bool("v", false, "print the peer tools' own reports")
	only := fs.String("only", "tftp,proxy,image", "parts to run (comma-separated); the last line needs all three")
	if err := fs.Parse(args); err != nil {
		return err
	}
	part := func(name string) bool { return slices.Contains(strings.Split(*only, ","), name) }
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	for _, c := range []string{"in.tftpd", "dnsmasq", "perfdhcp", "nginx", "curl", "taskset", *loomd, *first} {
		if _, err := exec.LookPath(c); err != nil {
			if _, serr := os.Stat(c); serr != nil {
				return fmt.Errorf("%s not found (run 'make deps build')", c)
			}
		}
	}
	loomBin, _ := filepath.Abs(*loomd)
	bootDir, _ := filepath.Abs("build/maintenance")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "loom-bench-netboot-")
	if err != nil {
		return err
	}
	defer lab.RemoveAll(tmp)

	pair, err := lab.NewVethPair(ctx, "loom-bn-"+lab.Suffix(), srvAddr+"/15", cliAddr+"/15")
	if err != nil {
		return err
	}
	defer lab.Cleanup(pair.Close)

	ipxeDir := filepath.Join(tmp, "ipxe")
	fb, err := os.ReadFile(*first)
	if err != nil {
		return err
	}
	name := filepath.Base(*first)
	if err := os.MkdirAll(ipxeDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(ipxeDir, name), fb, 0o644); err != nil {
		return err
	}

	var tl, th, pl, pd, il, in, total float64
	if part("tftp") {
		// TFTP.
		sum := fmt.Sprintf("%x", sha256.Sum256(fb))
		fmt.Fprintf(out, "bench netboot: TFTP %s (%d KiB) to %d clients, blksize 1468, windowsize 16; %d rounds\n", name, len(fb)>>10, *clients, *rounds)
		tftpServers := []server{
			{"loom", func(dir string) (*exec.Cmd, error) {
				return lab.StartIn(pair.Server, dir, "TFTP serving the first stage", "taskset", "-c", "0", loomBin, "--data-dir", filepath.Join(dir, "data"), "--api", "127.0.0.1:8080",
					"--netboot-interface", pair.ServerIf, "--boot-dir", bootDir, "--ipxe-dir", ipxeDir)
			}},
			{"tftpd-hpa", func(dir string) (*exec.Cmd, error) {
				return lab.StartIn(pair.Server, dir, "", "taskset", "-c", "0", "in.tftpd", "--foreground", "--address", srvAddr+":69", "--secure", ipxeDir)
			}},
		}
		tftpRes := map[string][]float64{}
		windows := map[string]string{}
		for r := 0; r < *rounds; r++ {
			for i := range tftpServers {
				sv := tftpServers[(i+r)%len(tftpServers)]
				dir := filepath.Join(tmp, fmt.Sprintf("tftp-%s-%d", sv.name, r))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				cmd, err := sv.start(dir)
				if err != nil {
					return fmt.Errorf("%s: %w", sv.name, err)
				}
				o, err := exec.CommandContext(ctx, "ip", "netns", "exec", pair.Client, "taskset", "-c", "1", self, "tftp-clients",
					"-server", srvAddr+":69", "-file", name, "-n", strconv.Itoa(*clients), "-sha256", sum).CombinedOutput()
				lab.Stop(cmd)
				if err != nil {
					return fmt.Errorf("TFTP from %s: %v\n%s", sv.name, err, o)
				}
				var secs float64
				var win string
				if _, err := fmt.Sscanf(strings.TrimSpace(string(o)), "seconds=%g window=%s", &secs, &win); err != nil {
					return fmt.Errorf("TFTP from %s: %q: %v", sv.name, o, err)
				}
				tftpRes[sv.name] = append(tftpRes[sv.name], secs)
				windows[sv.name] = win
			}
		}
		tl, th = median(tftpRes["loom"]), median(tftpRes["tftpd-hpa"])
		mb := float64(len(fb)**clients) / 1e6
		fmt.Fprintf(out, "  %-10s %6.2fs  %7.1f MB/s  window granted %s\n", "loom", tl, mb/tl, windows["loom"])
		fmt.Fprintf(out, "  %-10s %6.2fs  %7.1f MB/s  window granted %s\n", "tftpd-hpa", th, mb/th, windows["tftpd-hpa"])

	}
	if part("proxy") {
		// proxyDHCP.
		fmt.Fprintf(out, "bench netboot: proxyDHCP, perfdhcp -i at %d DISCOVERs/s for %ds, PXE clients (option 60), relayed\n", *load, *period)
		proxyServers := []server{
			{"loom", func(dir string) (*exec.Cmd, error) {
				return lab.StartIn(pair.Server, dir, "proxyDHCP ready", "taskset", "-c", "0", loomBin, "--data-dir", filepath.Join(dir, "data"), "--api", "127.0.0.1:8080",
					"--netboot-interface", pair.ServerIf, "--boot-dir", bootDir, "--ipxe-dir", ipxeDir, "--dhcp-mode", "proxy")
			}},
			{"dnsmasq", func(dir string) (*exec.Cmd, error) {
				return lab.StartIn(pair.Server, dir, "", "taskset", "-c", "0", "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
					"--interface="+pair.ServerIf, "--bind-interfaces", "--dhcp-range=198.18.0.0,proxy,255.254.0.0",
					"--pxe-service=x86PC,Loom,undionly", "--pxe-service=x86-64_EFI,Loom,ipxe.efi", "--dhcp-no-override",
					"--no-ping", "--quiet-dhcp", "--log-facility=-", "--pid-file="+filepath.Join(dir, "pid"))
			}},
		}
		proxyRes := map[string][]float64{}
		for r := 0; r < *rounds; r++ {
			for i := range proxyServers {
				sv := proxyServers[(i+r)%len(proxyServers)]
				dir := filepath.Join(tmp, fmt.Sprintf("proxy-%s-%d", sv.name, r))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				cmd, err := sv.start(dir)
				if err != nil {
					return fmt.Errorf("%s: %w", sv.name, err)
				}
				// Half a core for the server, a whole one for perfdhcp:
				// at full speed each server answers faster than perfdhcp
				// takes the answers in, and the run measures perfdhcp.
				g, err := cgroup.New("bench-netboot-"+lab.Suffix(), cgroup.Limits{MilliCPUs: *serverMilli, CPUPeriod: 2 * time.Millisecond})
				if err == nil {
					err = g.Add(cmd.Process.Pid)
				}
				if err != nil {
					lab.Stop(cmd)
					return fmt.Errorf("capping %s's CPU: %w", sv.name, err)
				}
				rate, raw := perfProxy(ctx, pair, *load, *period)
				if *verbose {
					fmt.Fprintf(out, "--- perfdhcp against %s:\n%s\n", sv.name, raw)
				}
				lab.Stop(cmd)
				lab.Cleanup(g.Remove)
				if rate == 0 {
					b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
					return fmt.Errorf("proxyDHCP from %s: no exchange completed:\n%s\nserver log:\n%s", sv.name, raw, lab.TailString(string(b), 10))
				}
				proxyRes[sv.name] = append(proxyRes[sv.name], rate)
			}
		}
		pl, pd = median(proxyRes["loom"]), median(proxyRes["dnsmasq"])
		fmt.Fprintf(out, "  %-10s %8.0f exchanges/s\n  %-10s %8.0f exchanges/s\n", "loom", pl, "dnsmasq", pd)

	}
	if part("image") {
		// Image serving.
		fmt.Fprintf(out, "bench netboot: image serving, %d concurrent pulls of a %d MiB raw image on loopback\n", *clients, *imageMiB)
		il, in, err = imageServing(ctx, tmp, loomBin, *clients, *imageMiB, *rounds, out)
		if err != nil {
			return err
		}
		total = float64(*clients**imageMiB) * (1 << 20) / 1e6
		fmt.Fprintf(out, "  %-10s %6.2fs  %7.0f MB/s (verified, into sparse files)\n  %-10s %6.2fs  %7.0f MB/s (curl -o)\n", "loom", il, total/il, "nginx", in, total/in)

	}
	if !part("tftp") || !part("proxy") || !part("image") {
		return nil
	}
	fmt.Fprintf(out, "bench netboot: vs_tftpd_hpa=%.2f vs_dnsmasq_proxy=%.2f rack_mbps=%.0f vs_nginx=%.2f clients=%d\n",
		th/tl, pl/pd, total/il, in/il, *clients)
	return nil
}

type server struct {
	name  string
	start func(dir string) (*exec.Cmd, error)
}

// tftpClients is run inside the client namespace: n concurrent fetches,
// each checked; it prints the wall time and the window granted.
func tftpClients(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tftp-clients", flag.ContinueOnError)
	srv := fs.String("server", "", "server host:port")
	file := fs.String("file", "", "file to fetch")
	n := fs.Int("n", 32, "concurrent clients")
	want := fs.String("sha256", "", "expected sha256")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, *n)
	wins := make([]int, *n)
	start := time.Now()
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, win, err := fetch(*srv, *file, 1468, 16)
			if err == nil && fmt.Sprintf("%x", sha256.Sum256(b)) != *want {
				err = fmt.Errorf("client %d: %d bytes that differ from the file", i, len(b))
			}
			errs[i], wins[i] = err, win
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(out, "seconds=%.4f window=%d\n", secs, wins[0])
	return nil
}

var rateRE = regexp.MustCompile(`Rate: ([0-9.]+) (?:DISCOVER-OFFER|[24]-way exchanges)/second`)

// perfProxy runs perfdhcp as a relay in the client namespace: DISCOVERs
// from PXE clients (option 60 "PXEClient", option 93 BIOS), OFFERs counted.
func perfProxy(ctx context.Context, p *lab.VethPair, load, period int) (float64, string) {
	pxe := fmt.Sprintf("%x", "PXEClient:Arch:00000:UNDI:002001")
	o, err := exec.CommandContext(ctx, "ip", "netns", "exec", p.Client, "taskset", "-c", "1", "perfdhcp", "-4", "-i", "-l", p.ClientIf,
		"-r", strconv.Itoa(load), "-R", "10000", "-p", strconv.Itoa(period),
		"-o", "60,"+pxe, "-o", "93,0000", srvAddr).CombinedOutput()
	s := string(o)
	m := rateRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Sprintf("%v\n%s", err, s)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v, s
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
