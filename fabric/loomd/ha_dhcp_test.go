package loomd_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/loomd/rig"
	"github.com/loomfabric/loom/fabric/metrics"
	"github.com/loomfabric/loom/scripts/lab"
	"github.com/loomfabric/loom/scripts/vmtest"
)

// TestTwoReplicasServeOneNetwork: two replicas, each in a namespace of its
// own, serve DHCP on one bridge (broadcasts reach both; both answer);
// perfdhcp bursts from a third. No address is leased (so acked: a lease
// is stored before its ACK) to two MACs, and both replicas hand out
// addresses.
func TestTwoReplicasServeOneNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("runs loomd replicas in network namespaces")
	}
	if os.Geteuid() != 0 {
		if vmtest.Required() {
			t.Fatal("needs root (network namespaces)")
		}
		t.Skip("needs root (network namespaces)")
	}
	vmtest.RequireTools(t, "make deps (kea-admin has perfdhcp)", "perfdhcp", "ip")
	lab.Claim()
	ctx := context.Background()
	hub, err := lab.NewNet(ctx, lab.TestNS(), netip.MustParsePrefix("10.98.0.254/24"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Close() }) // the namespace and its bridge
	dir := t.TempDir()
	boot := filepath.Join(dir, "boot")
	if err := os.MkdirAll(boot, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initramfs.cpio.xz"} {
		if err := os.WriteFile(filepath.Join(boot, f), []byte("not booted here"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var specs []rig.Spec
	for i := 1; i <= 2; i++ {
		ns := lab.TestNS()
		ip := fmt.Sprintf("10.98.0.%d", i)
		veth := "vh" + lab.Suffix()
		for _, s := range [][]string{
			{"netns", "add", ns},
			{"-n", hub.NS, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"-n", hub.NS, "link", "set", veth, "master", hub.Bridge},
			{"-n", hub.NS, "link", "set", veth, "up"},
			{"-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v\n%s", s, err, out)
			}
			if s[0] == "netns" {
				t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() }) // and the veth with it
			}
		}
		specs = append(specs, rig.Spec{Name: fmt.Sprintf("r%d", i), NS: ns, Listen: ip + ":8080", Peer: "http://" + ip + ":2380",
			Extra: []string{"--netboot-interface", "eth0", "--pool", "10.98.0.100-10.98.0.199", "--tftp", "off", "--boot-dir", boot, "--lease-time", "10m"}})
	}
	c, err := rig.StartSpecs(ctx, loomdBin(t), dir, specs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	// 80 clients at 200 exchanges/s for 3 s: both replicas answer each.
	out, err := hub.Command(ctx, "perfdhcp", "-4", "-l", hub.Bridge, "-r", "200", "-R", "80", "-p", "3").CombinedOutput()
	t.Logf("perfdhcp: %v\n%s", err, tail(string(out), 12))
	if !regexp.MustCompile(`4-way exchanges/second`).Match(out) {
		t.Fatalf("perfdhcp did not run: %v\n%s", err, out)
	}
	for _, m := range regexp.MustCompile(`non unique addresses: (\d+)`).FindAllStringSubmatch(string(out), -1) {
		if m[1] != "0" {
			t.Errorf("perfdhcp saw %s addresses handed out twice", m[1])
		}
	}
	leases, err := c.Client().Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byIP := map[string][]api.Lease{}
	for _, l := range leases {
		byIP[l.IP] = append(byIP[l.IP], l)
	}
	for ip, ls := range byIP {
		if len(ls) > 1 {
			t.Errorf("address %s leased to %d MACs: %v", ip, len(ls), ls)
		}
	}
	if len(leases) < 20 {
		t.Errorf("%d leases after the burst, want most of the 80 clients", len(leases))
	}
	// Both served: each replica's log shows its pool, and the leases'
	// addresses come from both ends of the spread.
	t.Logf("%d leases, %d addresses", len(leases), len(byIP))
	for _, r := range c.Replicas {
		b, _ := os.ReadFile(r.Log) // for the assertion
		if !strings.Contains(string(b), "dhcp: pool ready") {
			t.Errorf("%s did not serve DHCP:\n%s", r.Name, tail(string(b), 20))
		}
	}
	// Their metrics say the same: each received the DISCOVERs (broadcast)
	// and acked; every lease was acked by one of them.
	var acks float64
	for i, r := range c.Replicas {
		body, err := r.Client(c.Token()).Metrics(ctx)
		if err != nil {
			t.Fatalf("%s /metrics: %v", r.Name, err)
		}
		m, err := metrics.Samples(strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s /metrics: %v", r.Name, err)
		}
		t.Logf("%s: received %v discovers, %v requests; sent %v offers, %v acks, %v naks; dropped %v", r.Name,
			m[`loom_dhcp_received_total{type="discover"}`], m[`loom_dhcp_received_total{type="request"}`],
			m[`loom_dhcp_sent_total{type="offer"}`], m[`loom_dhcp_sent_total{type="ack"}`], m[`loom_dhcp_sent_total{type="nak"}`],
			m[`loom_dhcp_dropped_total{reason="other_server"}`])
		if m[`loom_dhcp_received_total{type="discover"}`] < 80 || m[`loom_dhcp_sent_total{type="offer"}`] == 0 {
			t.Errorf("%s's metrics: %v discovers received, %v offers sent; want every client's DISCOVER and offers", r.Name,
				m[`loom_dhcp_received_total{type="discover"}`], m[`loom_dhcp_sent_total{type="offer"}`])
		}
		if got := m[`loom_dhcp_pool_addresses{subnet="10.98.0.0/24"}`]; got != 100 {
			t.Errorf("%s: pool size %v, want 100", r.Name, got)
		}
		acks += m[`loom_dhcp_sent_total{type="ack"}`]
		if i == 0 {
			vmtest.RequireTools(t, "make deps installs Debian's prometheus", "promtool")
			cmd := exec.Command("promtool", "check", "metrics")
			cmd.Stdin = strings.NewReader(body)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("promtool check metrics: %v\n%s", err, out)
			}
		}
	}
	if acks < float64(len(leases)) {
		t.Errorf("%v ACKs from both replicas, but %d leases", acks, len(leases))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
