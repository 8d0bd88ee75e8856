// Command dhcp benchmarks Loom's DHCP server (loomd, every lease committed
// to embedded etcd before its ACK) against Kea (memfile leases, persisted)
// and dnsmasq, under Kea's perfdhcp, in the same run.
//
// Two network namespaces joined by a veth pair: the server side
// (198.18.0.1/15) and the client side (198.18.0.2/15), where perfdhcp acts
// as a relay agent and unicasts to the server. Server and perfdhcp are pinned to different cores. For each
// offered load, servers are run in turn (interleaved, rounds×), each from
// an empty lease store, and the medians are reported. Needs root and the
// packages from `make deps` (kea-admin, kea-dhcp4-server, dnsmasq-base).
//
// Last line: bench dhcp: loom_per_s=… vs_kea=… vs_dnsmasq=… (at the
// highest load; a ratio > 1 means Loom completed more exchanges per second).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/loomfabric/loom/scripts/lab"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench dhcp:", err)
		os.Exit(1)
	}
}

type result struct {
	rate   float64 // completed 4-way exchanges per second
	drops  int
	avgMs  float64 // mean of the two exchanges' average delays
	failed bool
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dhcp", flag.ContinueOnError)
	loadsFlag := fs.String("loads", "1000,4000,8000", "offered loads, exchanges/s")
	rounds := fs.Int("rounds", 3, "rounds per server and load (median taken)")
	period := fs.Int("period", 8, "seconds per perfdhcp run")
	clients := fs.Int("clients", 10000, "distinct clients (perfdhcp -R)")
	loomd := fs.String("loomd", "build/bin/loomd", "loomd binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var loads []int
	for _, s := range strings.Split(*loadsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-loads: %w", err)
		}
		loads = append(loads, n)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	for _, c := range []string{"perfdhcp", "kea-dhcp4", "dnsmasq", "taskset", *loomd} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%s not found (run 'make deps build')", c)
		}
	}
	bootDir, _ := filepath.Abs("build/maintenance")
	loomBin, _ := filepath.Abs(*loomd)

	pair, err := lab.NewVethPair(ctx, "loom-bd-"+lab.Suffix(), "198.18.0.1/15", "198.18.0.2/15")
	if err != nil {
		return err
	}
	defer lab.Cleanup(pair.Close)
	srvNS, cliNS := pair.Server, pair.Client

	servers := []struct {
		name  string
		start func(dir string) (*exec.Cmd, error)
	}{
		{"loom", func(dir string) (*exec.Cmd, error) {
			return lab.StartIn(srvNS, dir, "dhcp: pool ready", "taskset", "-c", "0", loomBin,
				"--data-dir", filepath.Join(dir, "data"), "--api", "127.0.0.1:8080",
				"--netboot-interface", "vs", "--pool", "198.18.1.0-198.19.255.254", "--boot-dir", bootDir)
		}},
		{"kea", func(dir string) (*exec.Cmd, error) {
			conf := filepath.Join(dir, "kea.json")
			if err := os.WriteFile(conf, []byte(fmt.Sprintf(keaConf, filepath.Join(dir, "leases4.csv"), filepath.Join(dir, "kea.log"))), 0o644); err != nil {
				return nil, err
			}
			if err := errors.Join(os.Setenv("KEA_PIDFILE_DIR", dir), os.Setenv("KEA_LOCKFILE_DIR", dir)); err != nil {
				return nil, err
			}
			return lab.StartIn(srvNS, dir, "", "taskset", "-c", "0", "kea-dhcp4", "-c", conf)
		}},
		{"dnsmasq", func(dir string) (*exec.Cmd, error) {
			return lab.StartIn(srvNS, dir, "", "taskset", "-c", "0", "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
				"--port=0", "--interface=vs", "--bind-interfaces", "--dhcp-range=198.18.1.0,198.19.255.254,255.254.0.0,1h",
				"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--dhcp-lease-max=200000", "--no-ping",
				"--quiet-dhcp", "--log-facility=-", "--pid-file="+filepath.Join(dir, "pid"))
		}},
	}

	tmp, err := os.MkdirTemp("", "loom-bench-dhcp-")
	if err != nil {
		return err
	}
	defer lab.RemoveAll(tmp)
	results := map[string]map[int][]result{}
	fmt.Fprintf(out, "bench dhcp: %d clients, %ds per run, %d rounds, loads %v\n", *clients, *period, *rounds, loads)
	for _, load := range loads {
		for r := 0; r < *rounds; r++ {
			for i := range servers {
				sv := servers[(i+r)%len(servers)] // rotate the order each round
				dir := filepath.Join(tmp, fmt.Sprintf("%s-%d-%d", sv.name, load, r))
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				cmd, err := sv.start(dir)
				if err != nil {
					return fmt.Errorf("%s: %w", sv.name, err)
				}
				res, raw := perf(ctx, cliNS, load, *clients, *period)
				lab.Stop(cmd)
				if res.failed {
					fmt.Fprintf(out, "  %s at %d/s round %d: perfdhcp failed:\n%s\n", sv.name, load, r, raw)
				}
				if results[sv.name] == nil {
					results[sv.name] = map[int][]result{}
				}
				results[sv.name][load] = append(results[sv.name][load], res)
			}
		}
	}

	fmt.Fprintf(out, "%-8s %8s %12s %8s %10s\n", "server", "offered", "completed/s", "drops", "avg ms")
	for _, load := range loads {
		for _, sv := range servers {
			m := median(results[sv.name][load])
			fmt.Fprintf(out, "%-8s %8d %12.0f %8d %10.2f\n", sv.name, load, m.rate, m.drops, m.avgMs)
		}
	}
	top := loads[len(loads)-1]
	loom, kea, dm := median(results["loom"][top]), median(results["kea"][top]), median(results["dnsmasq"][top])
	fmt.Fprintf(out, "bench dhcp: loom_per_s=%.0f kea_per_s=%.0f dnsmasq_per_s=%.0f vs_kea=%.2f vs_dnsmasq=%.2f load=%d clients=%d\n",
		loom.rate, kea.rate, dm.rate, ratio(loom.rate, kea.rate), ratio(loom.rate, dm.rate), top, *clients)
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

const keaConf = `{"Dhcp4": {
  "interfaces-config": {"interfaces": ["vs"], "dhcp-socket-type": "udp"},
  "lease-database": {"type": "memfile", "persist": true, "name": %q, "lfc-interval": 0},
  "valid-lifetime": 3600, "renew-timer": 1800, "rebind-timer": 3000,
  "subnet4": [{"id": 1, "subnet": "198.18.0.0/15", "pools": [{"pool": "198.18.1.0 - 198.19.255.254"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": %q}], "severity": "WARN"}]
}}`

var (
	rateRE  = regexp.MustCompile(`Rate: ([0-9.]+) 4-way exchanges/second`)
	dropsRE = regexp.MustCompile(`drops: ([0-9]+)`)
	delayRE = regexp.MustCompile(`avg delay: ([0-9.]+) ms`)
)

func perf(ctx context.Context, ns string, load, clients, period int) (result, string) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "taskset", "-c", "1",
		"perfdhcp", "-4", "-l", "vc", "-r", fmt.Sprint(load), "-R", fmt.Sprint(clients), "-p", fmt.Sprint(period),
		"198.18.0.1").CombinedOutput() // relayed, unicast to the server, as a relay does
	s := string(out)
	m := rateRE.FindStringSubmatch(s)
	if m == nil {
		return result{failed: true}, fmt.Sprintf("%v\n%s", err, s)
	}
	var r result
	r.rate, _ = strconv.ParseFloat(m[1], 64)
	for _, d := range dropsRE.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(d[1])
		r.drops += n
	}
	ds := delayRE.FindAllStringSubmatch(s, -1)
	for _, d := range ds {
		v, _ := strconv.ParseFloat(d[1], 64)
		r.avgMs += v / float64(len(ds))
	}
	return r, s
}

// median picks the run with the median rate.
func median(rs []result) result {
	if len(rs) == 0 {
		return result{}
	}
	s := append([]result(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].rate < s[j].rate })
	return s[len(s)/2]
}
