// Command dhcp benchmarks Loom's DHCP server (loomd, every lease committed
// to embedded etcd before its ACK) against Kea (memfile leases, persisted,
// cache-threshold 0.25 as Loom's lease reuse) and dnsmasq, under Kea's
// perfdhcp, in the same run, with an echo server beside them: a stateless
// responder (this program, run with -echo-server) that shows what perfdhcp
// itself can drive.
//
// Two network namespaces joined by a veth pair: the server side
// (198.18.0.1/15) and the client side (198.18.0.2/15), where perfdhcp acts
// as a relay agent and unicasts to the server. Server and perfdhcp are
// pinned to different cores; perfdhcp runs single-threaded (-g single):
// its default on a machine of more than one core, a receiving thread
// handing packets to the sending one, shares its one core and lost
// answers in its own socket buffer from 12,000/s on, whatever the server
// (the echo server included). For each offered load, servers are run in
// turn (interleaved, rounds×), each from an empty lease store, and the
// medians are reported, with each server's CPU time per completed
// exchange and the packets dropped at a full socket receive buffer on each
// side (the server's: requests it did not read in time; perfdhcp's: answers
// it did not). Needs root and the packages from `make deps` (kea-admin,
// kea-dhcp4-server, dnsmasq-base).
//
// Last line: bench dhcp: loom_per_s=… vs_kea=… vs_dnsmasq=… (at 8,000/s;
// a ratio > 1 means Loom completed more exchanges per second), then
// vs_kea_<N>k for each higher load, and at the top load Loom's drops (a
// share of the packets perfdhcp sent) and the echo server's rate and drops.
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
	"time"

	"github.com/loomfabric/loom/scripts/lab"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == echoFlag {
		if err := echoServer(); err != nil {
			fmt.Fprintln(os.Stderr, "bench dhcp: echo server:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench dhcp:", err)
		os.Exit(1)
	}
}

type result struct {
	rate  float64 // completed 4-way exchanges per second
	drops int
	sent  int     // packets perfdhcp sent (DISCOVERs and REQUESTs)
	avgMs float64 // mean of the two exchanges' average delays
	cpuUs float64 // the server's CPU time per completed exchange, µs
	// packets the kernel dropped at a full socket receive buffer during
	// the run: the server's (requests it never read) and perfdhcp's
	// (answers it never read)
	srvLost, cliLost int
	failed           bool
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dhcp", flag.ContinueOnError)
	loadsFlag := fs.String("loads", "1000,4000,8000,12000,16000", "offered loads, exchanges/s")
	rounds := fs.Int("rounds", 3, "rounds per server and load (median taken)")
	period := fs.Int("period", 8, "seconds per perfdhcp run")
	clients := fs.Int("clients", 10000, "distinct clients (perfdhcp -R)")
	loomd := fs.String("loomd", "build/bin/loomd", "loomd binary")
	only := fs.String("servers", "loom,kea,dnsmasq,echo", "servers to run (the last line needs all four)")
	loomdB := fs.String("loomd-b", "", "a second loomd binary, run as server loom-b beside loom in the same rounds (an A/B of two builds)")
	profile := fs.String("profile", "", "write a CPU profile of loomd's last run at each load to this directory (loom-<load>.pprof), and its allocations (loom-<load>.allocs.pprof)")
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

	self, err := os.Executable()
	if err != nil {
		return err
	}
	startLoom := func(bin string, profiled bool) func(dir string) (*exec.Cmd, error) {
		return func(dir string) (*exec.Cmd, error) {
			args := []string{"taskset", "-c", "0", bin,
				"--data-dir", filepath.Join(dir, "data"), "--api", "127.0.0.1:8080",
				"--netboot-interface", "vs", "--pool", "198.18.1.0-198.19.255.254", "--boot-dir", bootDir}
			if profiled {
				args = append(args, "--debug-addr", debugAddr)
			}
			return lab.StartIn(srvNS, dir, "dhcp: pool ready", args...)
		}
	}
	servers := []server{
		{"loom", startLoom(loomBin, *profile != "")},
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
		{"echo", func(dir string) (*exec.Cmd, error) {
			return lab.StartIn(srvNS, dir, echoReady, "taskset", "-c", "0", self, echoFlag)
		}},
	}

	want := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		want[strings.TrimSpace(n)] = true
	}
	if *loomdB != "" {
		b, err := filepath.Abs(*loomdB)
		if err != nil {
			return err
		}
		servers = append(servers, server{"loom-b", startLoom(b, false)})
		want["loom-b"] = true
	}
	var chosen = servers[:0]
	for _, sv := range servers {
		if want[sv.name] {
			chosen = append(chosen, sv)
			delete(want, sv.name)
		}
	}
	if len(want) > 0 || len(chosen) == 0 {
		return fmt.Errorf("-servers %q: loom, kea, dnsmasq and echo are known", *only)
	}
	servers = chosen
	if *profile != "" {
		if err := os.MkdirAll(*profile, 0o755); err != nil {
			return err
		}
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
				var prof chan error
				if sv.name == "loom" && *profile != "" {
					prof = make(chan error, 1)
					go func() {
						prof <- cpuProfile(ctx, srvNS, *period, filepath.Join(*profile, fmt.Sprintf("loom-%d.pprof", load)))
					}()
				}
				cpu0 := cpuTicks(cmd.Process.Pid)
				srv0, cli0 := rcvbufErrors(srvNS), rcvbufErrors(cliNS)
				res, raw := perf(ctx, cliNS, load, *clients, *period)
				res.srvLost, res.cliLost = rcvbufErrors(srvNS)-srv0, rcvbufErrors(cliNS)-cli0
				if res.rate > 0 {
					// the server's CPU (user + system) per completed exchange
					res.cpuUs = float64(cpuTicks(cmd.Process.Pid)-cpu0) * 1e6 / clockTicks / (res.rate * float64(*period))
				}
				if prof != nil {
					if err := <-prof; err != nil {
						fmt.Fprintf(out, "  profile of loom at %d/s: %v\n", load, err)
					}
				}
				lab.Stop(cmd)
				if n := errorLines(filepath.Join(dir, "server.log")); len(n) > 0 {
					fmt.Fprintf(out, "  %s at %d/s round %d: %d errors in its log, the first: %s\n", sv.name, load, r, len(n), n[0])
				}
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

	fmt.Fprintf(out, "%-8s %8s %12s %8s %7s %10s %10s %9s %9s\n", "server", "offered", "completed/s", "drops", "drops%", "avg ms", "cpu µs/x", "srv lost", "cli lost")
	defer func() {
		if !lastLine(servers) {
			fmt.Fprintln(out, "bench dhcp: (not every server run: no last line)")
		}
	}()
	for _, load := range loads {
		for _, sv := range servers {
			m := median(results[sv.name][load])
			fmt.Fprintf(out, "%-8s %8d %12.0f %8d %7.2f %10.2f %10.1f %9d %9d\n", sv.name, load, m.rate, m.drops, m.dropPct(), m.avgMs, m.cpuUs, m.srvLost, m.cliLost)
		}
	}
	if !lastLine(servers) {
		return nil
	}
	// The headline stays at 8,000/s (the figure of earlier runs); the
	// loads past it get a ratio each, and the top load's drops.
	head := 8000
	if _, ok := results["loom"][head]; !ok {
		head = loads[len(loads)-1]
	}
	loom, kea, dm := median(results["loom"][head]), median(results["kea"][head]), median(results["dnsmasq"][head])
	line := fmt.Sprintf("bench dhcp: loom_per_s=%.0f kea_per_s=%.0f dnsmasq_per_s=%.0f vs_kea=%.2f vs_dnsmasq=%.2f load=%d clients=%d",
		loom.rate, kea.rate, dm.rate, ratio(loom.rate, kea.rate), ratio(loom.rate, dm.rate), head, *clients)
	for _, load := range loads {
		if load <= head {
			continue
		}
		l, k := median(results["loom"][load]), median(results["kea"][load])
		line += fmt.Sprintf(" vs_kea_%dk=%.2f", load/1000, ratio(l.rate, k.rate))
	}
	if top := loads[len(loads)-1]; top > head {
		l, e := median(results["loom"][top]), median(results["echo"][top])
		line += fmt.Sprintf(" drops_pct_%dk=%.1f echo_per_s_%dk=%.0f echo_drops_pct_%dk=%.1f", top/1000, l.dropPct(), top/1000, e.rate, top/1000, e.dropPct())
	}
	fmt.Fprintln(out, line)
	return nil
}

// lastLine says whether the servers run include the four the last line
// compares.
func lastLine(servers []server) bool {
	n := 0
	for _, sv := range servers {
		switch sv.name {
		case "loom", "kea", "dnsmasq", "echo":
			n++
		}
	}
	return n == 4
}

// server is a DHCP server the bench runs: start runs it with its state in
// dir and returns when it serves.
type server struct {
	name  string
	start func(dir string) (*exec.Cmd, error)
}

// rcvbufErrors is UDP's RcvbufErrors in network namespace ns so far:
// datagrams the kernel dropped because a socket's receive buffer was full.
func rcvbufErrors(ns string) int {
	b, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		return 0
	}
	var head []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == "RcvbufErrors" && i < len(f) {
				n, _ := strconv.Atoi(f[i])
				return n
			}
		}
	}
	return 0
}

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's times.
const clockTicks = 100

// cpuTicks is the user and system time pid has used so far (0 if it is
// gone).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command's name (which may hold spaces) in ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// errorLines are the lines of a server's log at level ERROR.
func errorLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

// debugAddr is where loomd serves its profiler in the server's namespace.
const debugAddr = "127.0.0.1:6060"

// cpuProfile saves a CPU profile of loomd over the middle of a perfdhcp
// run of period seconds (the first second and the last left out).
func cpuProfile(ctx context.Context, ns string, period int, path string) error {
	secs := max(period-2, 1)
	time.Sleep(time.Second)
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "curl", "-sf", "-o", path,
		fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", debugAddr, secs)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	out, err = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "curl", "-sf", "-o", strings.TrimSuffix(path, ".pprof")+".allocs.pprof",
		fmt.Sprintf("http://%s/debug/pprof/allocs", debugAddr)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("allocations: %v: %s", err, out)
	}
	return nil
}

// dropPct is the share of the packets perfdhcp sent that got no answer.
func (r result) dropPct() float64 {
	if r.sent == 0 {
		return 0
	}
	return 100 * float64(r.drops) / float64(r.sent)
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
  "cache-threshold": 0.25,
  "valid-lifetime": 3600, "renew-timer": 1800, "rebind-timer": 3000,
  "subnet4": [{"id": 1, "subnet": "198.18.0.0/15", "pools": [{"pool": "198.18.1.0 - 198.19.255.254"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": %q}], "severity": "WARN"}]
}}`

var (
	rateRE  = regexp.MustCompile(`Rate: ([0-9.]+) 4-way exchanges/second`)
	dropsRE = regexp.MustCompile(`drops: ([0-9]+)`)
	sentRE  = regexp.MustCompile(`sent packets: ([0-9]+)`)
	delayRE = regexp.MustCompile(`avg delay: ([0-9.]+) ms`)
)

func perf(ctx context.Context, ns string, load, clients, period int) (result, string) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "taskset", "-c", "1",
		"perfdhcp", "-4", "-g", "single", "-l", "vc", "-r", fmt.Sprint(load), "-R", fmt.Sprint(clients), "-p", fmt.Sprint(period),
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
	for _, d := range sentRE.FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(d[1])
		r.sent += n
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
