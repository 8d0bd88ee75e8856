// Command loomd is the Loom fabric controller.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // --debug-addr
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/fabric/dhcp"
	"github.com/loomfabric/loom/fabric/loomd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loomd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	var c loomd.Config
	fs := flag.NewFlagSet("loomd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.DataDir, "data-dir", "", "directory for the store and tokens (required)")
	fs.StringVar(&c.API, "api", ":8080", "API listen address: the API over TLS, and the netboot files over plain HTTP too")
	fs.StringVar(&c.APIUnix, "api-unix", "", "also serve the API on this unix socket")
	fs.StringVar(&c.NetbootInterface, "netboot-interface", "", "interface to serve DHCP and netboot on (none: no netboot)")
	fs.StringVar(&c.Pool, "pool", "", "DHCP pool START-END (default .100-.199 of the interface's subnet)")
	mode := fs.String("dhcp-mode", "server", "server: hand out addresses and boot information; proxy: boot information only, another DHCP server owns the addresses (proxyDHCP, ports 67 and 4011)")
	var subnets subnetFlags
	fs.Var(&subnets, "subnet", "a subnet behind a DHCP relay: PREFIX,pool=START-END[,router=IP][,dns=IP;IP] (repeatable)")
	fs.BoolVar(&c.NoHTTPBoot, "no-http-boot", false, "do not answer UEFI HTTP boot clients (by default they get the http:// URL of ipxe.efi)")
	fs.StringVar(&c.IPXEDir, "ipxe-dir", "/usr/lib/ipxe", "directory with the first-stage iPXE binaries served over TFTP (undionly.kpxe, ipxe.efi, snponly.efi)")
	fs.StringVar(&c.TFTPAddr, "tftp", "", `TFTP listen address for firmware PXE (default: the netboot address, port 69; "off" disables it)`)
	fs.StringVar(&c.BootDir, "boot-dir", "build/maintenance", "directory with vmlinuz and initramfs.cpio.xz")
	fs.StringVar(&c.FabricURL, "fabric-url", "", "https://HOST:PORT booting machines reach the API at (default from the netboot address; the netboot files are http:// on the same host and port); with replicas, every replica's URL, comma-separated, this one's first: agents fail over between them")
	fs.StringVar(&c.KernelArgs, "kernel-args", "", "kernel arguments for the maintenance OS (default console=tty0 console=ttyS0,115200 panic=-1)")
	fs.StringVar(&c.DefaultProfile, "default-profile", "", "provision every newly registered node with this profile")
	fs.BoolVar(&c.IPv6RA, "ipv6-ra", false, "send 'no router' IPv6 router adverts on the netboot interface (saves iPXE ~13 s where no IPv6 router exists)")
	fs.DurationVar(&c.LeaseTime, "lease-time", 0, "DHCP lease time (default 1h)")
	fs.Float64Var(&c.LeaseReuse, "lease-reuse", 0.25, "a client asking again for its address within this fraction of the lease time gets its stored lease (the time it has left) with no new write, as Kea's cache-threshold; 0 or less: every ACK writes")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat", 0, "heartbeat interval told to agents (default 5s)")
	fs.DurationVar(&c.Grace, "grace", 0, "silence before a node is Unreachable (default 4 heartbeats)")
	fs.DurationVar(&c.BootGrace, "boot-grace", 0, "silence allowed to a node booting its host OS, from kexec to its host agent's registration (default 10m)")
	fs.DurationVar(&c.LostAfter, "lost-after", 0, "how long a host may be Unreachable before its service instances are replaced on other hosts (default 2m)")
	fs.StringVar(&c.ConsoleDir, "console-dir", "", "directory of the servers' console logs, one per machine named by a MAC (52:54:00:4c:00:01.log): their last lines on GET /v1/nodes/{id}/console and the dashboard")
	fs.IntVar(&c.EventKeep, "event-keep", 0, "how many events the history keeps, the newest (default 50000)")
	fs.DurationVar(&c.EventMaxAge, "event-max-age", 0, "how long the history keeps an event (default 720h)")
	fs.IntVar(&c.MaxRestarts, "max-restarts", 0, "how many crashes of a service instance its host restarts in place before it is replaced on another host (default 5)")
	fs.StringVar(&c.EndpointIP, "endpoint-ip", "", "the address services' endpoints listen on, each web role on its manifest's port (default: the API's address)")
	router := fs.String("router", "", "router handed out by DHCP")
	dns := fs.String("dns", "", "comma-separated DNS servers handed out by DHCP")
	etcd := fs.String("etcd", "", "comma-separated external etcd endpoints (default: embedded)")
	fs.StringVar(&c.Name, "name", "", "this replica's name, and its etcd member's (default loomd)")
	fs.StringVar(&c.PeerURL, "peer-url", "", "http://HOST:PORT where this replica's etcd member meets the other replicas' (default: a loopback port, no peers)")
	fs.StringVar(&c.ClientURL, "client-url", "", "http://HOST:PORT where this replica's etcd member serves etcd clients (default: a loopback port; loomd itself talks to it in-process)")
	fs.StringVar(&c.InitialCluster, "initial-cluster", "", "NAME=PEER-URL,... of the replicas bootstrapping a cluster together, this one included (first start only)")
	fs.BoolVar(&c.Join, "join", false, "join a running cluster that has added this replica (loom cluster add prints the flags)")
	fs.StringVar(&c.AdvertiseAPI, "advertise-api", "", "URL the other replicas forward writes to (default from --api, else the first --fabric-url)")
	fs.DurationVar(&c.ElectionTimeout, "election-timeout", 0, "raft election timeout of the etcd members (default 1s; give every replica the same)")
	fs.DurationVar(&c.LeaderTTL, "leader-ttl", 0, "how long a silent leader keeps its leadership, about what a failover takes (default 2s, whole seconds)")
	var reserve reservations
	fs.Func("tls-san", "another host name or address for this replica's certificate (repeatable; its listen, netboot and advertised addresses, loopback and host name are in it already)", func(v string) error {
		if v = strings.TrimSpace(v); v == "" || strings.ContainsAny(v, " /,") {
			return fmt.Errorf("%q: want a host name or an IP address", v)
		}
		c.TLSNames = append(c.TLSNames, v)
		return nil
	})
	fs.Var(&reserve, "reserve", "static DHCP reservation MAC=IP (repeatable)")
	verbose := fs.Bool("v", false, "debug logging")
	debugAddr := fs.String("debug-addr", "", "serve Go's profiler (net/http/pprof) on this address, e.g. 127.0.0.1:6060 (none by default; it has no authentication)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.LeaseReuse <= 0 {
		c.LeaseReuse = -1 // off (dhcp's zero is its default)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *router != "" {
		if c.Router = net.ParseIP(*router); c.Router == nil {
			return fmt.Errorf("--router %q: not an IP address", *router)
		}
	}
	for _, d := range strings.Split(*dns, ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		ip := net.ParseIP(d)
		if ip == nil {
			return fmt.Errorf("--dns %q: not an IP address", d)
		}
		c.DNS = append(c.DNS, ip)
	}
	if *etcd != "" {
		c.EtcdEndpoints = strings.Split(*etcd, ",")
	}
	c.Reservations = reserve
	c.Subnets = subnets
	m, err := dhcp.ParseMode(*mode)
	if err != nil {
		return fmt.Errorf("--dhcp-mode: %w", err)
	}
	c.DHCPMode = m
	if v := os.Getenv("LOOM_FAULT_CUT_BLOBS"); v != "" { // tests only
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("LOOM_FAULT_CUT_BLOBS=%q: %w", v, err)
		}
		c.Faults.CutBlobs = int32(n)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *debugAddr != "" {
		ln, err := net.Listen("tcp", *debugAddr)
		if err != nil {
			return fmt.Errorf("--debug-addr: %w", err)
		}
		srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second} // pprof's handlers
		go func() { _ = srv.Serve(ln) }()
		defer func() { _ = srv.Close() }() // the profiler goes with loomd
		log.Info("profiler", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	}
	return c.Start(ctx, log)
}

type subnetFlags []dhcp.Subnet

func (s *subnetFlags) String() string { return fmt.Sprint(len(*s), " subnets") }

func (s *subnetFlags) Set(v string) error {
	sn, err := dhcp.ParseSubnet(v)
	if err != nil {
		return err
	}
	*s = append(*s, sn)
	return nil
}

type reservations map[string]net.IP

func (r *reservations) String() string { return fmt.Sprint(map[string]net.IP(*r)) }

func (r *reservations) Set(s string) error {
	mac, ipStr, ok := strings.Cut(s, "=")
	ip := net.ParseIP(ipStr)
	if !ok || ip == nil {
		return fmt.Errorf("want MAC=IP, got %q", s)
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	if *r == nil {
		*r = map[string]net.IP{}
	}
	(*r)[hw.String()] = ip
	return nil
}
