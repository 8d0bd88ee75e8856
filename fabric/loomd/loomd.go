// Package loomd is the fabric controller as one service: the store, the
// node registry and its monitor, the DHCP server and the HTTP API (with
// netboot files) under one Start.
package loomd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/dhcp"
	"github.com/loomfabric/loom/fabric/events"
	"github.com/loomfabric/loom/fabric/image"
	"github.com/loomfabric/loom/fabric/metrics"
	"github.com/loomfabric/loom/fabric/netboot"
	"github.com/loomfabric/loom/fabric/node"
	"github.com/loomfabric/loom/fabric/pki"
	"github.com/loomfabric/loom/fabric/server"
	"github.com/loomfabric/loom/fabric/service"
	"github.com/loomfabric/loom/fabric/store"
	"github.com/loomfabric/loom/fabric/tftp"
	"github.com/loomfabric/loom/fabric/ui"
	"github.com/loomfabric/loom/fabric/vms"
)

// Token file names in the data directory.
const (
	OperatorTokenFile = "operator.token"
	EnrollTokenFile   = "enroll.token"
)

// Config is loomd's configuration.
type Config struct {
	// DataDir holds the store and the tokens. Required.
	DataDir string
	// API is the HTTP listen address. Default ":8080".
	API string
	// MaxRestarts: a service instance that crashed this many times is
	// replaced on another host. Default 5.
	MaxRestarts int
	// UsageSample and UsageFlush: how often service instances are looked
	// at for metering, and how often a period's usage is stored. Default
	// 5s and 1m.
	UsageSample, UsageFlush time.Duration
	// ConsoleDir holds the servers' console logs, one per machine named
	// by a MAC ("52:54:00:4c:00:01.log"), for GET /v1/nodes/{id}/console
	// and the dashboard's node page ("": none).
	ConsoleDir string
	// EventKeep and EventMaxAge bound the event history: the newest
	// EventKeep events, none older than EventMaxAge. Default 50,000 and
	// 30 days.
	EventKeep   int
	EventMaxAge time.Duration
	// EndpointIP is where services' endpoints listen (each web role on
	// its manifest's port). Default: the API's address.
	EndpointIP string
	// APIUnix, if set, is a unix socket that serves the API too (the lab
	// uses it to reach a loomd inside its network namespace).
	APIUnix string
	// NetbootInterface, if set, gets the DHCP server and its first IPv4
	// address is the one booting machines are sent to.
	NetbootInterface string
	// DHCPMode is dhcp.ModeServer (default: loomd hands out addresses) or
	// dhcp.ModeProxy (another DHCP server does; loomd answers netboot
	// clients with boot information only).
	DHCPMode dhcp.Mode
	// Pool is the DHCP range "START-END". Default: from .100 to .199 of
	// the netboot interface's /24 (or the whole subnet if it is smaller).
	Pool string
	// Subnets behind DHCP relays, each with its pool.
	Subnets []dhcp.Subnet
	// NoHTTPBoot leaves UEFI HTTP boot clients unanswered. By default they
	// are sent the http:// URL of ipxe.efi.
	NoHTTPBoot bool
	// Router and DNS are handed out by DHCP if set.
	Router net.IP
	DNS    []net.IP
	// LeaseTime of DHCP leases. Default 1h.
	LeaseTime time.Duration
	// LeaseReuse is dhcp.Config's: the fraction of the lease time within
	// which a client asking again gets its stored lease. Default 0.25;
	// negative: never.
	LeaseReuse float64
	// Reservations maps MAC to fixed address.
	Reservations map[string]net.IP
	// BootDir holds vmlinuz and initramfs.cpio.xz. Required with
	// NetbootInterface.
	BootDir string
	// IPXEDir holds the first-stage iPXE binaries that firmware PXE
	// fetches over TFTP (undionly.kpxe for BIOS, ipxe.efi and snponly.efi
	// for UEFI). Default /usr/lib/ipxe (Debian's ipxe package).
	IPXEDir string
	// TFTPAddr is where TFTP listens with NetbootInterface. Default: the
	// netboot address, port 69; "off" disables it.
	TFTPAddr string
	// FabricURL is how machines reach the API. Default
	// http://<netboot address>:<API port>. With replicas, every one's URL,
	// comma-separated, this replica's first: booting machines are told
	// them all and fail over between them.
	FabricURL string
	// KernelArgs are extra kernel arguments for the maintenance OS.
	KernelArgs string
	// IPv6RA sends "no router here" IPv6 router adverts on the netboot
	// interface so iPXE does not wait for one (see netboot.SendRouterAdverts).
	IPv6RA bool
	// HeartbeatInterval told to agents. Default 5s.
	HeartbeatInterval time.Duration
	// Grace before a silent node is Unreachable. Default 4×HeartbeatInterval.
	Grace time.Duration
	// BootGrace is how long a node booting its host OS may be silent.
	// Default 10 minutes.
	BootGrace time.Duration
	// LostAfter is how long a host may be Unreachable before its service
	// instances are replaced elsewhere. Default service.DefaultLostAfter.
	LostAfter time.Duration
	// EtcdEndpoints, if set, uses an external etcd instead of the embedded one.
	EtcdEndpoints []string
	// Replication (all optional: by default one replica, alone).
	//
	// Name is this replica's (and its etcd member's) name. Default "loomd".
	Name string
	// PeerURL is where this replica's etcd member meets its peers.
	PeerURL string
	// ClientURL is where its etcd member serves etcd clients.
	ClientURL string
	// InitialCluster is "name=peerURL,..." of the replicas bootstrapping
	// the cluster together (read on the first start only).
	InitialCluster string
	// Join starts this replica into a running cluster that added it
	// (loom cluster add prints the flags).
	Join bool
	// AdvertiseAPI is the URL other replicas forward writes to. Default:
	// http://<API address> when it names one, else FabricURL's first,
	// else http://127.0.0.1:<API port>.
	AdvertiseAPI string
	// ElectionTimeout is the etcd members' raft election timeout (default
	// etcd's 1s; the same on every replica).
	ElectionTimeout time.Duration
	// LeaderTTL is how long a silent leader keeps its leadership (default
	// store.DefaultLeaderTTL): about what a failover takes.
	LeaderTTL time.Duration
	// DefaultProfile, if set, provisions every newly registered node with it.
	DefaultProfile string
	// TLSNames are more host names or addresses for this replica's
	// certificate (beyond its listen, netboot and advertised addresses,
	// loopback and the host name).
	TLSNames []string
	// Faults injects failures for tests (see netboot/fault.go); never set
	// it in production.
	Faults Faults
}

// endpointIP is the address service endpoints listen on: EndpointIP, or
// the API's address when that names one ("" for every address).
func (c *Config) endpointIP() string {
	if c.EndpointIP != "" {
		return c.EndpointIP
	}
	host, _, err := net.SplitHostPort(c.apiAddr())
	if err != nil {
		return ""
	}
	return host
}

// spread starts the DHCP pools' search for free addresses at an offset
// of this replica's own when it is one of several (see dhcp.Config).
func (c *Config) spread() uint32 {
	if c.InitialCluster == "" && !c.Join {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(c.name())) // a hash's Write never fails
	return h.Sum32() | 1
}

// name is this replica's name.
func (c *Config) name() string {
	if c.Name == "" {
		return "loomd"
	}
	return c.Name
}

// advertiseAPI is the URL other replicas reach this one's API at.
func (c *Config) advertiseAPI(port int) string {
	if c.AdvertiseAPI != "" {
		return c.AdvertiseAPI
	}
	if host, _, err := net.SplitHostPort(c.apiAddr()); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			return "https://" + net.JoinHostPort(host, strconv.Itoa(port))
		}
	}
	if c.FabricURL != "" {
		return strings.TrimSpace(strings.Split(c.FabricURL, ",")[0])
	}
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// DefaultAPI is where the API listens when Config.API is unset.
const DefaultAPI = ":8080"

// apiAddr is where the API listens.
func (c *Config) apiAddr() string {
	if c.API == "" {
		return DefaultAPI
	}
	return c.API
}

// Start runs loomd until ctx is cancelled. The caller's c is not changed
// (defaults are read through methods such as apiAddr).
func (c *Config) Start(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	st, err := store.Open(ctx, store.Config{DataDir: c.DataDir, Endpoints: c.EtcdEndpoints,
		Name: c.Name, PeerURL: c.PeerURL, ClientURL: c.ClientURL, InitialCluster: c.InitialCluster, Join: c.Join, ElectionTimeout: c.ElectionTimeout}, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Warn("loomd: closing the store", "err", err)
		}
	}()
	// Every replica holds the cluster's tokens (the first one's).
	opTok, err := sharedToken(ctx, st, filepath.Join(c.DataDir, OperatorTokenFile))
	if err != nil {
		return err
	}
	enrollTok, err := sharedToken(ctx, st, filepath.Join(c.DataDir, EnrollTokenFile))
	if err != nil {
		return err
	}
	ca, err := clusterCA(ctx, st, c.DataDir, c.name())
	if err != nil {
		return err
	}

	guests := vms.New(vms.Config{Store: st}, log)
	var dhcpSrv *dhcp.Server // set before the API serves
	var reg *node.Registry
	mets := metrics.New(metrics.Sources{
		Nodes: func(ctx context.Context) ([]api.Node, error) { return reg.List(ctx) },
		VMs:   guests.VMs,
		StoreSize: func(ctx context.Context) (int64, error) {
			m, err := st.SelfStatus(ctx)
			return m.DBSize, err
		},
		Leading: st.Leading,
		DHCP: func() dhcp.Stats {
			if dhcpSrv == nil {
				return dhcp.Stats{}
			}
			return dhcpSrv.Stats()
		},
	}, log)
	st.Observe(mets.StoreRequest)
	reg = node.New(node.Config{Store: st, Guests: guests, HeartbeatInterval: c.HeartbeatInterval, Grace: c.Grace, BootGrace: c.BootGrace, DefaultProfile: c.DefaultProfile, CA: ca, Observer: mets}, log)
	ln, err := net.Listen("tcp", c.apiAddr())
	if err != nil {
		return fmt.Errorf("API listener: %w", err)
	}
	lib := &image.Library{Blobs: image.Blobs{Dir: filepath.Join(c.DataDir, "images")}, KV: st,
		InUse: func(ctx context.Context, name string) (string, error) {
			if user, err := node.ProfilesUsing(ctx, st.Profiles, name); user != "" || err != nil {
				return user, err
			}
			if user, err := service.ServicesUsing(ctx, st.Services, name); user != "" || err != nil {
				return user, err
			}
			return vms.VMsUsing(ctx, st.VMs, name)
		}}
	me := api.Replica{Name: c.name(), API: c.advertiseAPI(ln.Addr().(*net.TCPAddr).Port), Peer: c.PeerURL}
	var netbootIP net.IP
	if c.NetbootInterface != "" {
		if ifi, err := net.InterfaceByName(c.NetbootInterface); err == nil {
			if ipn, err := firstIPv4(ifi); err == nil {
				netbootIP = ipn.IP
			}
		}
	}
	cert, err := ca.ServerCert(me.Name, c.certHosts(netbootIP, me.API))
	if err != nil {
		ln.Close()
		return err
	}
	peers := peerTLS(ca, cert)
	lib.Fetch = fetchBlob(st, c.name(), opTok, peers)
	ctl := service.NewController(st, service.Policy{LostAfter: c.LostAfter, MaxRestarts: c.MaxRestarts}, log)
	pacer := &service.Pacer{}
	ctl.Pace(pacer)
	eps := service.NewEndpoints(st, c.endpointIP(), log)
	scfg := server.Config{Registry: reg, OperatorToken: opTok, EnrollToken: enrollTok, Images: lib, Profiles: st, VMs: guests, Power: reg, Credentials: st, Racks: reg,
		Services: service.NewManager(st, ctl, eps), Queues: service.NewQueues(st), Heartbeat: pacer.Begin}
	scfg.ClientCAs = ca.Pool()
	scfg.Cluster = &cluster{st: st, self: me.Name, api: me.API, tls: peers}
	scfg.Tokens, scfg.Audit = st, st
	scfg.Metrics = mets.Handler()
	scfg.Events = st
	scfg.ConsoleDir = c.ConsoleDir

	g, ctx := errgroup.WithContext(ctx)
	if c.NetbootInterface != "" {
		discovered := make(chan string, 1024)
		g.Go(func() error { return recordDiscovered(ctx, reg, discovered, log) })
		srv, boot, ts, err := c.netboot(ctx, st, reg, discovered, enrollTok, ca, ln.Addr().(*net.TCPAddr).Port, log)
		if err != nil {
			ln.Close()
			return err
		}
		scfg.Boot = boot
		dhcpSrv = srv
		if c.DHCPMode != dhcp.ModeProxy {
			scfg.Leases = st
		}
		g.Go(func() error { return srv.Serve(ctx) })
		if ts != nil {
			g.Go(func() error { return ts.Serve(ctx) })
		}
		if c.IPv6RA {
			g.Go(func() error { return netboot.SendRouterAdverts(ctx, c.NetbootInterface, 2*time.Second, log) })
		}
	}
	fwd := &forwarder{st: st, self: me.Name, local: mets.API(server.New(scfg, log)), log: log, wait: 10 * time.Second, tls: peers}
	var handler http.Handler = fwd
	if c.Faults.CutBlobs > 0 {
		handler = c.Faults.wrap(handler, log)
	}
	if handler, err = c.dashboard(ctx, st, scfg, handler, log); err != nil {
		ln.Close()
		return err
	}
	// One port: the API over TLS, the netboot files over plain HTTP too.
	split := newSplitTLS(ln, log)
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, TLSConfig: ca.ServerTLS(cert),
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)} // TLS handshake failures are the client's to report
	plain := &http.Server{Handler: plainOnly(handler), ReadHeaderTimeout: 10 * time.Second}
	listeners := []net.Listener{tls.NewListener(split.tls, hs.TLSConfig)}
	if c.APIUnix != "" {
		if err := os.Remove(c.APIUnix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			ln.Close()
			return fmt.Errorf("API socket: removing the last one: %w", err)
		}
		ul, err := net.Listen("unix", c.APIUnix)
		if err == nil {
			// Only root may connect (tokens are still checked).
			if err = os.Chmod(c.APIUnix, 0o600); err != nil {
				ul.Close()
			}
		}
		if err != nil {
			ln.Close()
			return fmt.Errorf("API socket: %w", err)
		}
		listeners = append(listeners, ul)
	}
	g.Go(func() error {
		if err := plain.Serve(split.plain); !errors.Is(err, http.ErrServerClosed) && (ctx.Err() == nil || !errors.Is(err, net.ErrClosed)) {
			return fmt.Errorf("API (plain HTTP): %w", err)
		}
		return nil
	})
	for _, l := range listeners {
		g.Go(func() error {
			log.Info("loomd: API listening", "addr", l.Addr().String(), "data", c.DataDir)
			// The split listener closes under both servers at once.
			if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) && (ctx.Err() == nil || !errors.Is(err, net.ErrClosed)) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		defer func() { _ = plain.Close() }() // netboot files: nothing to finish
		if err := hs.Shutdown(sctx); err != nil {
			// A request still running after the grace, or a client's
			// connection that never sent one (net/http counts those as
			// busy for 5 s): cut them. Stopping is not a failure.
			log.Warn("loomd: API connections still open at shutdown; closing them", "err", err)
			_ = hs.Close() // the listeners are closed already; its error would say only that
		}
		return nil
	})
	meter := &service.Meter{Sample: c.UsageSample, Flush: c.UsageFlush, List: guests.VMs, Append: st.AppendUsage, Log: log}
	// The leader's work: what must run once in the fabric.
	lead := func(ctx context.Context) error {
		lg, ctx := errgroup.WithContext(ctx)
		lg.Go(func() error { return reg.Monitor(ctx) })
		lg.Go(func() error { return ctl.Run(ctx, 2*time.Second) })
		lg.Go(func() error { return eps.Run(ctx, time.Second) })
		lg.Go(func() error { return meter.Run(ctx) })
		lg.Go(func() error { return c.trimLogs(ctx, st, log) })
		lg.Go(func() error { return (&events.Recorder{Store: st, Log: log}).Run(ctx) })
		return lg.Wait()
	}
	g.Go(func() error { return st.Lead(ctx, me, c.LeaderTTL, lead, log) })
	g.Go(func() error { return st.Maintain(ctx, log) })
	g.Go(func() error { return fwd.watchLeader(ctx, 200*time.Millisecond) })
	return g.Wait()
}

// dashboard puts the web dashboard (/ui/) in front of the API. Its
// session key is the cluster's: a session made on one replica is good on
// every other, and across restarts.
func (c *Config) dashboard(ctx context.Context, st *store.Store, scfg server.Config, apiHandler http.Handler, log *slog.Logger) (http.Handler, error) {
	local := make([]byte, 32)
	if _, err := rand.Read(local); err != nil {
		return nil, err
	}
	key, err := st.SharedSecret(ctx, "ui-session-key", hex.EncodeToString(local))
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	return ui.New(ui.Config{Key: []byte(key), Log: log,
		Check: func(ctx context.Context, t string) (string, api.Role, bool) {
			return server.CheckToken(ctx, scfg.OperatorToken, scfg.Tokens, t)
		},
		Nodes: scfg.Registry.List}, apiHandler)
}

func (c *Config) netboot(ctx context.Context, st *store.Store, reg *node.Registry, discovered chan<- string, enrollTok string, ca *pki.CA, port int, log *slog.Logger) (*dhcp.Server, *netboot.Handler, *tftp.Server, error) {
	ifi, err := net.InterfaceByName(c.NetbootInterface)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("netboot interface: %w", err)
	}
	ipn, err := firstIPv4(ifi)
	if err != nil {
		return nil, nil, nil, err
	}
	fabricURLs := c.FabricURL
	if fabricURLs == "" {
		fabricURLs = "https://" + net.JoinHostPort(ipn.IP.String(), strconv.Itoa(port))
	}
	// The netboot files are plain HTTP at this replica's address (firmware
	// cannot check a certificate); the API is https.
	bootURL, err := plainURL(strings.Split(fabricURLs, ",")[0])
	if err != nil {
		return nil, nil, nil, err
	}
	staged, err := c.stageFirstStage(log)
	if err != nil {
		return nil, nil, nil, err
	}
	boot, err := netboot.New(netboot.Config{BootDir: c.BootDir, FirstStageDir: c.firstStageDir(), BaseURL: bootURL, FabricURLs: fabricURLs, EnrollToken: enrollTok, CA: ca.CertPEM, KernelArgs: c.KernelArgs, MAC: node.NormalizeMAC,
		Boot: func(mac string) api.BootChoice { return reg.BootChoice(ctx, mac) }}, log)
	if err != nil {
		return nil, nil, nil, err
	}
	dcfg := dhcp.Config{
		Mode: c.DHCPMode, Interface: c.NetbootInterface, ServerIP: ipn.IP, Netmask: ipn.Mask,
		Subnets: c.Subnets, Router: c.Router, DNS: c.DNS, LeaseTime: c.LeaseTime, LeaseReuse: c.LeaseReuse,
		Reservations: c.Reservations, ScriptURL: boot.ScriptURL, Leases: st,
		NoTFTP: c.TFTPAddr == "off",
		Spread: c.spread(),
		Seen: func(mac string) {
			select {
			case discovered <- mac:
			default: // the recorder is behind; the MAC will DISCOVER again
			}
		},
	}
	if !c.NoHTTPBoot && slices.Contains(staged, "ipxe.efi") {
		dcfg.HTTPBootURL = boot.FirstStageURL()
	}
	if c.DHCPMode != dhcp.ModeProxy {
		if dcfg.PoolStart, dcfg.PoolEnd, err = poolRange(c.Pool, ipn); err != nil {
			return nil, nil, nil, err
		}
	} else if c.Pool != "" || len(c.Subnets) > 0 || len(c.Reservations) > 0 {
		return nil, nil, nil, errors.New("--pool, --subnet and --reserve hand out addresses: not with --dhcp-mode proxy, where another server does")
	}
	srv, err := dhcp.New(ctx, dcfg, log)
	if err != nil {
		return nil, nil, nil, err
	}
	var ts *tftp.Server
	if c.TFTPAddr != "off" {
		if ts, err = c.startTFTP(net.JoinHostPort(ipn.IP.String(), "69"), log); err != nil {
			return nil, nil, nil, err
		}
	}
	return srv, boot, ts, nil
}

// plainURL is the http:// URL of the same host and port as an API URL
// (where the netboot files are: firmware cannot check certificates).
func plainURL(api string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(api))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("fabric URL %q: want https://HOST:PORT", api)
	}
	if u.Port() == "" {
		return "", fmt.Errorf("fabric URL %q: give the port (the netboot files are served on the API's port over plain HTTP)", api)
	}
	return "http://" + u.Host, nil
}

// firstStage are the iPXE binaries firmware fetches over TFTP.
var firstStage = []string{"undionly.kpxe", "ipxe.efi", "snponly.efi"}

// firstStageDir is where the first stage is staged for TFTP and HTTP.
func (c *Config) firstStageDir() string { return filepath.Join(c.DataDir, "tftp") }

// stageFirstStage copies the first-stage binaries into firstStageDir
// (copies, so that the TFTP root holds regular files only: Debian's
// ipxe.efi is a symlink out of its directory) and says which it staged.
func (c *Config) stageFirstStage(log *slog.Logger) ([]string, error) {
	src := c.IPXEDir
	if src == "" {
		src = "/usr/lib/ipxe"
	}
	dir := c.firstStageDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("first-stage dir: %w", err)
	}
	var staged []string
	for _, name := range firstStage {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			log.Warn("loomd: first-stage iPXE binary missing: firmware PXE clients that need it cannot boot (apt-get install ipxe)", "file", name, "err", err)
			continue
		}
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return nil, fmt.Errorf("staging %s: %w", name, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("staging %s: %w", name, err)
		}
		staged = append(staged, name)
	}
	return staged, nil
}

// startTFTP opens the TFTP server for the staged first stage on TFTPAddr,
// or on defaultAddr (the netboot address, port 69).
func (c *Config) startTFTP(defaultAddr string, log *slog.Logger) (*tftp.Server, error) {
	addr := c.TFTPAddr
	if addr == "" {
		addr = defaultAddr
	}
	dir := c.firstStageDir()
	ts, err := tftp.New(tftp.Config{Dir: dir, Addr: addr}, log)
	if err != nil {
		return nil, err
	}
	log.Info("loomd: TFTP serving the first stage", "addr", addr, "dir", dir)
	return ts, nil
}

// recordDiscovered turns MACs from DHCP into Discovered nodes, off the
// packet path.
func recordDiscovered(ctx context.Context, reg *node.Registry, macs <-chan string, log *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case mac := <-macs:
			batch := []string{mac}
		drain: // whatever else is waiting goes in the same transaction
			for len(batch) < 256 {
				select {
				case m := <-macs:
					batch = append(batch, m)
				default:
					break drain
				}
			}
			// Any replica records what its DHCP saw (creates guarded by
			// the MACs' index keys).
			if err := reg.DiscoveredMany(store.AnyReplica(ctx), batch); err != nil && ctx.Err() == nil {
				log.Warn("recording discovered nodes", "macs", len(batch), "err", err)
			}
		}
	}
}

func firstIPv4(ifi *net.Interface) (*net.IPNet, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return &net.IPNet{IP: n.IP.To4(), Mask: n.Mask}, nil
		}
	}
	return nil, fmt.Errorf("netboot interface %s has no IPv4 address", ifi.Name)
}

// poolRange parses "START-END", or derives a default from the subnet.
func poolRange(s string, ipn *net.IPNet) (net.IP, net.IP, error) {
	if s != "" {
		a, b, ok := strings.Cut(s, "-")
		start, end := net.ParseIP(strings.TrimSpace(a)).To4(), net.ParseIP(strings.TrimSpace(b)).To4()
		if !ok || start == nil || end == nil {
			return nil, nil, fmt.Errorf("--pool %q: want START-END, two IPv4 addresses", s)
		}
		return start, end, nil
	}
	ones, bits := ipn.Mask.Size()
	if bits != 32 || ones > 30 {
		return nil, nil, fmt.Errorf("subnet of %v is too small for a default pool; give --pool", ipn)
	}
	base := ipn.IP.Mask(ipn.Mask)
	size := uint32(1) << (32 - ones)
	lo, hi := uint32(100), uint32(199)
	if size < 256 {
		lo, hi = 1, size-2
	}
	at := func(off uint32) net.IP {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		v += off
		return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
	}
	return at(lo), at(hi), nil
}

// token reads a token file, creating it (0600) on first start.
func token(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("token file %s is empty", path)
		}
		return t, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	t := rand.Text()
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return t, nil
}
