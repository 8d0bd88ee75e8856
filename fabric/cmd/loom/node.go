package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func (a *app) nodesCmd() *cobra.Command {
	return listCmd(a, "nodes", "List every node: MAC, IP, phase, CPUs, memory, disks, last seen", (*client.Client).Nodes,
		func(w io.Writer, ns []api.Node) error { return nodeTable(w, ns, a.now()) })
}

func (a *app) leasesCmd() *cobra.Command {
	return listCmd(a, "leases", "List DHCP leases, with the relay each came through", sortedLeases,
		func(w io.Writer, ls []api.Lease) error { return leaseTable(w, ls, a.now()) })
}

func sortedLeases(c *client.Client, ctx context.Context) ([]api.Lease, error) {
	leases, err := c.Leases(ctx)
	slices.SortFunc(leases, func(a, b api.Lease) int {
		x, _ := netip.ParseAddr(a.IP)
		y, _ := netip.ParseAddr(b.IP)
		return x.Compare(y)
	})
	return leases, err
}

func (a *app) nodeCmd() *cobra.Command {
	node := &cobra.Command{Use: "node", Short: "Show, provision, watch, power and decommission one node"}

	show := oneCmd(a, "show ID", "Show one node: inventory, BMC, profile, imaging progress, its events", nodeIDs, nodeAndEvents, func(w io.Writer, n nodeView) error { return nodeDetail(w, n, a.now()) })

	var profile string
	provision := oneCmd(a, "provision ID --profile P", "Image the node with a profile (its maintenance agent lays the image down)", nodeIDs,
		func(c *client.Client, ctx context.Context, id string) (api.Node, error) {
			return c.Provision(ctx, id, profile)
		},
		sayf(func(n api.Node) string {
			return fmt.Sprintf("node %s: provisioning with profile %s (generation %d)", n.ID, n.Profile, n.Provision)
		}))
	provision.Flags().StringVar(&profile, "profile", "", "profile to provision with (loom profile list)")
	_ = provision.MarkFlagRequired("profile")
	a.completeFlag(provision, "profile", profileNames)

	reprovision := oneCmd(a, "reprovision ID", "Image the node again with its profile", nodeIDs, (*client.Client).Reprovision,
		sayf(func(n api.Node) string {
			return fmt.Sprintf("node %s: reprovisioning with profile %s (generation %d)", n.ID, n.Profile, n.Provision)
		}))

	watch := &cobra.Command{
		Use:               "watch ID",
		Short:             "Follow the node's imaging with a progress bar until it is Ready (or fail when it fails)",
		Args:              args(1),
		ValidArgsFunction: a.complete(nodeIDs),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			return watchNode(ctx, c, args[0], cmd.OutOrStdout())
		}),
	}

	decommission := oneCmd(a, "decommission ID", "Erase every disk of the node the strongest way it offers, then power it off", nodeIDs, (*client.Client).Decommission,
		sayf(func(n api.Node) string {
			how := "its maintenance agent wipes it"
			if n.BMC != nil {
				how = "booting it into the maintenance OS through its BMC; powered off when wiped"
			}
			return fmt.Sprintf("node %s: decommissioning (every disk erased the strongest way it offers): %s", n.ID, how)
		}))

	del := deleteCmd(a, "node", "Forget a node and revoke its certificate (the machine's next boot makes a new node)", nodeIDs, (*client.Client).DeleteNode, "its certificate is refused from now on")

	var lines int
	console := oneCmd(a, "console ID", "Print the last lines of a node's console log (loomd --console-dir)", nodeIDs,
		func(c *client.Client, ctx context.Context, id string) (string, error) {
			return c.Console(ctx, id, lines)
		},
		func(w io.Writer, text string) error { _, err := io.WriteString(w, text); return err })
	console.Flags().IntVarP(&lines, "lines", "n", 50, "how many lines (1 to 1000)")

	node.AddCommand(show, provision, reprovision, watch, decommission, del, console, a.nodeBMCCmd(), a.nodePowerCmd())
	return node
}

func (a *app) nodeBMCCmd() *cobra.Command {
	var b api.BMC
	cmd := oneCmd(a, "bmc ID --address A --credential C", "Give a node its BMC (Redfish or IPMI) so that loom can power it", nodeIDs,
		func(c *client.Client, ctx context.Context, id string) (api.Node, error) { return c.SetBMC(ctx, id, b) },
		sayf(func(n api.Node) string {
			return fmt.Sprintf("node %s: BMC %s %s (credential %s)", n.ID, n.BMC.Protocol, n.BMC.Address, n.BMC.Credential)
		}))
	f := cmd.Flags()
	f.StringVar(&b.Address, "address", "", "the BMC's URL or host[:port] (https by default; IPMI: host[:623])")
	f.StringVar(&b.Credential, "credential", "", "name of the credential to log in with (loom credential set)")
	f.StringVar(&b.Protocol, "protocol", api.BMCRedfish, "BMC protocol: redfish or ipmi")
	f.BoolVar(&b.Insecure, "insecure", false, "do not check the BMC's TLS certificate")
	a.completeFlag(cmd, "credential", credentialNames)
	a.completeFlag(cmd, "protocol", fixed(api.BMCRedfish, api.BMCIPMI))
	return cmd
}

func (a *app) nodePowerCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "power status|on|off|cycle|pxe-once ID",
		Short:             "Power a node through its BMC (pxe-once: boot from the network next time)",
		Args:              args(2),
		ValidArgsFunction: a.complete(fixed("status", "on", "off", "cycle", "pxe-once"), nodeIDs),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			op, id := args[0], args[1]
			state, err := c.Power(ctx, id, op)
			if err != nil {
				return err
			}
			return a.show(cmd, map[string]string{"node": id, "power": state}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "node %s: power %s\n", id, state)
				return err
			})
		}),
	}
}

// watchNode draws a progress bar until the node is Ready or Failed.
func watchNode(ctx context.Context, c *client.Client, id string, w io.Writer) error {
	last := ""
	for {
		n, err := c.Node(ctx, id)
		if err != nil {
			return err
		}
		line := string(n.Phase)
		if p := n.Progress; n.Phase == api.PhaseImaging && p != nil && p.Total > 0 {
			const width = 40
			done := int(p.Bytes * width / p.Total)
			line = fmt.Sprintf("Imaging [%s%s] %3d%% %s", strings.Repeat("#", done), strings.Repeat(".", width-done), p.Bytes*100/p.Total, progressText(p))
		}
		if line != last {
			fmt.Fprintf(w, "\r\033[K%s %s", time.Now().Format("15:04:05"), line)
			last = line
		}
		switch n.Phase {
		case api.PhaseReady:
			fmt.Fprintln(w)
			return nil
		case api.PhaseFailed:
			fmt.Fprintln(w)
			return fmt.Errorf("node %s failed: %s", id, n.Reason)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(w)
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func leaseTable(w io.Writer, leases []api.Lease, now time.Time) error {
	var rows [][]string
	for _, l := range leases {
		exp := "in " + l.Expires.Sub(now).Round(time.Second).String()
		if !l.Expires.After(now) {
			exp = "expired " + ago(l.Expires, now)
		}
		relay, circuit, remote := "-", "-", "-"
		if l.Relay != nil {
			relay, circuit, remote = l.Relay.GIAddr, dash(l.Relay.CircuitID), dash(l.Relay.RemoteID)
		}
		rows = append(rows, []string{l.IP, l.MAC, dash(l.Hostname), exp, relay, circuit, remote})
	}
	return table(w, "IP | MAC | HOSTNAME | EXPIRES | RELAY | CIRCUIT | REMOTE", rows)
}

func nodeTable(w io.Writer, nodes []api.Node, now time.Time) error {
	var rows [][]string
	for _, n := range nodes {
		cpus, mem, disks := "-", "-", "-"
		if inv := n.Inventory; inv != nil {
			cpus = fmt.Sprint(inv.CPU.Count)
			mem = bytesHuman(inv.Memory)
			var ds []string
			for _, d := range inv.Disks {
				ds = append(ds, d.Name+":"+bytesHuman(d.SizeBytes))
			}
			disks = strings.Join(ds, ",")
		}
		rows = append(rows, []string{n.ID, n.MAC, dash(n.IP), phaseText(n), cpus, mem, disks, ago(n.LastSeen, now)})
	}
	return table(w, "ID | MAC | IP | PHASE | CPUS | MEMORY | DISKS | LAST SEEN", rows)
}

// nodeView is a node with its events, the newest 50 (nil from a loomd
// without an event history: the node's own phase list then).
type nodeView struct {
	api.Node
	Events []api.Event `json:"events,omitempty"`
}

func nodeAndEvents(c *client.Client, ctx context.Context, id string) (nodeView, error) {
	n, err := c.Node(ctx, id)
	if err != nil {
		return nodeView{}, err
	}
	evs, err := c.Events(ctx, client.EventQuery{Object: id, Limit: 50})
	var se *client.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		err = nil // no history kept there
	}
	return nodeView{Node: n, Events: evs}, err
}

func nodeDetail(w io.Writer, v nodeView, now time.Time) error {
	n := v.Node
	f := newFields(w)
	f.add("ID", "%s", n.ID)
	f.add("Phase", "%s (since %s)", n.Phase, n.PhaseChanged.Format(time.RFC3339))
	f.add("MAC", "%s", n.MAC)
	f.add("IP", "%s", n.IP)
	if n.Rack != "" {
		f.add("Rack", "%s slot %s", n.Rack, dash(n.Slot))
	}
	f.add("Last seen", "%s", ago(n.LastSeen, now))
	f.add("Agent", "%s (%s mode)", n.AgentVersion, n.Mode)
	if n.Accel != nil {
		f.add("Guests run", "%s", n.Accel)
	}
	if n.GuestVCPUs > 0 && n.Inventory != nil {
		f.add("Guest vCPUs", "%d offered on %d CPUs (loom-agent --vcpus)", n.GuestVCPUs, n.Inventory.CPU.Count)
	}
	if b := n.BMC; b != nil {
		power := "power not read yet"
		if b.Power != "" {
			power = "power " + b.Power + " " + ago(b.PowerChecked, now)
		}
		f.add("BMC", "%s %s (credential %s), %s", b.Protocol, b.Address, b.Credential, power)
		if b.LastAction != "" {
			f.add("Last power action", "%s", b.LastAction)
		}
	}
	if n.Profile != "" {
		f.add("Profile", "%s (generation %d, imaged %d)", n.Profile, n.Provision, n.Imaged)
	}
	if n.Reason != "" {
		f.add("Reason", "%s", n.Reason)
	}
	if n.Decommission {
		f.add("Decommission", "%s", dash(n.Wiped))
	}
	if p := n.Progress; p != nil {
		f.add("Imaging", "%s", progressText(p))
	}
	if v.Events != nil {
		for i, e := range v.Events {
			label := ""
			if i == 0 {
				label = "Events"
			}
			f.add(label, "%s", eventLine(e))
		}
	} else {
		for i, h := range n.History {
			label := ""
			if i == 0 {
				label = "History"
			}
			f.add(label, "%s", eventLine(api.Event{Time: h.At, From: string(h.From), To: string(h.To), Reason: h.Reason}))
		}
	}
	inv := n.Inventory
	if inv == nil {
		f.add("Inventory", "none yet (the node has not registered)")
		return f.flush()
	}
	f.add("System", "%s %s (serial %q, uuid %s)", inv.DMI.Vendor, inv.DMI.Product, inv.DMI.Serial, inv.DMI.UUID)
	f.add("CPU", "%d × %s", inv.CPU.Count, inv.CPU.Model)
	f.add("Memory", "%s", bytesHuman(inv.Memory))
	for _, nic := range inv.NICs {
		link := "down"
		if nic.Link {
			link = "up"
		}
		speed := ""
		if nic.SpeedMbps > 0 {
			speed = fmt.Sprintf(" %d Mb/s", nic.SpeedMbps)
		}
		f.add("NIC "+nic.Name, "%s link %s%s", nic.MAC, link, speed)
	}
	for _, d := range inv.Disks {
		kind := "ssd"
		if d.Rotational {
			kind = "rotational"
		}
		if d.Removable {
			kind += ", removable"
		}
		f.add("Disk "+d.Name, "%s %s serial %q (%s)", bytesHuman(d.SizeBytes), d.Model, d.Serial, kind)
	}
	return f.flush()
}

// deleteCmd is `loom KIND delete NAME`: del, then "KIND NAME: deleted; after".
func deleteCmd(a *app, kind, short string, ids names, del func(*client.Client, context.Context, string) error, after string) *cobra.Command {
	return &cobra.Command{
		Use:               "delete " + strings.ToUpper(kind),
		Short:             short,
		Args:              args(1),
		ValidArgsFunction: a.complete(ids),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			if err := del(c, ctx, args[0]); err != nil {
				return err
			}
			return a.show(cmd, map[string]string{kind: args[0], "deleted": "true"}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s %s: deleted; %s\n", kind, args[0], after)
				return err
			})
		}),
	}
}

// eventLine is "15:04:05.000  from → to (why, by whom)".
func eventLine(e api.Event) string {
	line := e.Time.Format("15:04:05.000") + "  " + e.To
	if e.From != "" {
		line = e.Time.Format("15:04:05.000") + "  " + e.From + " → " + e.To
	}
	var why []string
	if e.Reason != "" {
		why = append(why, e.Reason)
	}
	if e.Actor != "" {
		why = append(why, "by "+e.Actor)
	}
	if len(why) > 0 {
		line += " (" + strings.Join(why, ", ") + ")"
	}
	return line
}
