package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loomfabric/loom/fabric/api"
)

// phases and vmStates are every value the gauges by phase and state
// carry, so that a phase with no node reads 0 rather than nothing.
var (
	phases = []api.Phase{api.PhaseEnrolled, api.PhaseDiscovered, api.PhaseRegistered, api.PhaseImaging, api.PhaseImaged,
		api.PhaseBooting, api.PhaseReady, api.PhaseFailed, api.PhaseUnreachable, api.PhaseWiping, api.PhaseDecommissioned}
	vmStates = []api.VMState{api.VMStatePending, api.VMStateStarting, api.VMStateRunning, api.VMStateStopped,
		api.VMStateCrashed, api.VMStateFailed}
)

// scrapeTimeout bounds the store reads of one scrape.
const scrapeTimeout = 10 * time.Second

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	dhcpReceived = desc("loom_dhcp_received_total", "DHCP messages received, by type (discover, request, …, other).", "type")
	dhcpSent     = desc("loom_dhcp_sent_total", "DHCP answers made, by type (offer, ack, nak).", "type")
	dhcpDropped  = desc("loom_dhcp_dropped_total", "DHCP requests left unanswered, by reason (malformed, unknown_relay, no_address, other_server, store_error, no_boot_file, send_failed).", "reason")
	poolSize     = desc("loom_dhcp_pool_addresses", "Addresses in a subnet's pool.", "subnet")
	poolLeased   = desc("loom_dhcp_pool_leased_addresses", "Addresses of a subnet's pool under an unexpired lease.", "subnet")
	poolOffered  = desc("loom_dhcp_pool_offered_addresses", "Addresses of a subnet's pool held for an offer.", "subnet")
	nodesBy      = desc("loom_nodes", "Nodes, by phase.", "phase")
	imagingNow   = desc("loom_nodes_imaging_bytes", "Image data written so far by the nodes imaging now.")
	vmsBy        = desc("loom_vms", "VMs, by state.", "state")
	vmCPU        = desc("loom_vm_cpu_seconds_total", "CPU time a guest has used, as its host last reported it.", "node", "vm")
	vmMemory     = desc("loom_vm_memory_bytes", "Memory a guest uses, as its host last reported it.", "node", "vm")
	vmChannel    = desc("loom_vm_channel_bytes_total", "Bytes through a guest's channel to its host, as its host last reported it.", "node", "vm")
	storeSize    = desc("loom_store_size_bytes", "Size of this replica's store (etcd's database file).")
	leader       = desc("loom_leader", "1 if this replica leads the fabric, else 0.")
)

// state reads the fabric's state at each scrape.
type state struct {
	src Sources
	log *slog.Logger
}

func newState(src Sources, log *slog.Logger) *state { return &state{src: src, log: log} }

// Describe implements prometheus.Collector.
func (s *state) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dhcpReceived, dhcpSent, dhcpDropped, poolSize, poolLeased, poolOffered,
		nodesBy, imagingNow, vmsBy, vmCPU, vmMemory, vmChannel, storeSize, leader} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *state) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if f := s.src.DHCP; f != nil {
		st := f()
		for k, v := range st.Received {
			ch <- prometheus.MustNewConstMetric(dhcpReceived, prometheus.CounterValue, float64(v), k)
		}
		for k, v := range st.Sent {
			ch <- prometheus.MustNewConstMetric(dhcpSent, prometheus.CounterValue, float64(v), k)
		}
		for k, v := range st.Dropped {
			ch <- prometheus.MustNewConstMetric(dhcpDropped, prometheus.CounterValue, float64(v), k)
		}
		for _, p := range st.Pools {
			ch <- prometheus.MustNewConstMetric(poolSize, prometheus.GaugeValue, float64(p.Size), p.Subnet)
			ch <- prometheus.MustNewConstMetric(poolLeased, prometheus.GaugeValue, float64(p.Leased), p.Subnet)
			ch <- prometheus.MustNewConstMetric(poolOffered, prometheus.GaugeValue, float64(p.Offered), p.Subnet)
		}
	}
	if f := s.src.Nodes; f != nil {
		if nodes, err := f(ctx); err != nil {
			ch <- prometheus.NewInvalidMetric(nodesBy, err)
		} else {
			by := map[api.Phase]int{}
			var writing uint64
			for _, n := range nodes {
				by[n.Phase]++
				if n.Phase == api.PhaseImaging && n.Progress != nil {
					writing += n.Progress.Bytes
				}
			}
			for _, p := range phases {
				ch <- prometheus.MustNewConstMetric(nodesBy, prometheus.GaugeValue, float64(by[p]), string(p))
			}
			ch <- prometheus.MustNewConstMetric(imagingNow, prometheus.GaugeValue, float64(writing))
		}
	}
	if f := s.src.VMs; f != nil {
		if vms, err := f(ctx); err != nil {
			ch <- prometheus.NewInvalidMetric(vmsBy, err)
		} else {
			by := map[api.VMState]int{}
			for _, v := range vms {
				st := v.State
				if st == "" {
					st = api.VMStatePending
				}
				by[st]++
				if u := v.Usage; u != nil && v.Node != "" {
					ch <- prometheus.MustNewConstMetric(vmCPU, prometheus.CounterValue, u.CPUSeconds, v.Node, v.ID)
					ch <- prometheus.MustNewConstMetric(vmMemory, prometheus.GaugeValue, float64(u.MemoryBytes), v.Node, v.ID)
					ch <- prometheus.MustNewConstMetric(vmChannel, prometheus.CounterValue, float64(u.ChannelBytes), v.Node, v.ID)
				}
			}
			for _, st := range vmStates {
				ch <- prometheus.MustNewConstMetric(vmsBy, prometheus.GaugeValue, float64(by[st]), string(st))
			}
		}
	}
	if f := s.src.StoreSize; f != nil {
		if n, err := f(ctx); err != nil {
			ch <- prometheus.NewInvalidMetric(storeSize, err)
		} else {
			ch <- prometheus.MustNewConstMetric(storeSize, prometheus.GaugeValue, float64(n))
		}
	}
	if f := s.src.Leading; f != nil {
		v := 0.0
		if f() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(leader, prometheus.GaugeValue, v)
	}
}
