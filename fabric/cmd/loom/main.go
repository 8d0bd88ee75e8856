// Command loom is the operator's CLI for loomd.
//
// It finds loomd through LOOM_ADDR (default http://127.0.0.1:8080; a
// unix:///path socket works too) and its operator token through LOOM_TOKEN
// or --token-file.
//
//	loom nodes                              a table of every node
//	loom node show ID [-o json]             one node's full inventory
//	loom node provision ID --profile P      image the node with profile P
//	loom node reprovision ID                image it again
//	loom node watch ID                      live imaging progress until Ready or Failed
//	loom rack import FILE.csv               enroll a rack (see fabric/rack for the columns)
//	loom rack power-on RACK; loom rack watch RACK
//	loom image add FILE [--name N] [--bmap F.bmap]
//	loom image list | show NAME | rm NAME
//	loom profile set NAME --image I [--disk RULE] [--kernel-args A]
//	loom profile list | show NAME | rm NAME
//	loom vm create [--node ID] --vcpus N --memory M --package P [--set K=V]
//	loom vm list | show ID | start ID | stop ID | reboot ID | delete ID
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loom:", err)
		os.Exit(1)
	}
}

const usage = `usage: loom [--token-file F] COMMAND
  nodes                                  list nodes
  leases                                 list DHCP leases (with the relay they came through)
  node show ID [-o json]                 show one node
  node provision ID --profile P          image the node with profile P
  node reprovision ID                    image it again
  node watch ID                          follow imaging until Ready or Failed
  node decommission ID                   erase every disk (NVMe secure erase, else zeroes), power off
  node bmc ID --address A --credential C [--protocol redfish|ipmi] [--insecure]
                                         give a node its Redfish BMC (A: URL or host[:port])
  node power status|on|off|cycle|pxe-once ID
                                         power a node through its BMC
  credential set NAME --username U --password-file F ('-': stdin)
  credential list                        BMC credentials (passwords never shown)
  rack import FILE.csv                   enroll a rack's servers before they boot (columns:
                                         mac,rack,slot,profile,bmc_address,bmc_protocol,credential,bmc_insecure)
  rack list | show RACK                  racks by phase; one rack's servers by slot
  rack power-on RACK                     boot every server of a rack through its BMC (PXE once)
  rack power status|on|off|cycle RACK
  rack watch RACK [--timeout D]          follow a rack until every server is Ready or Failed
  image add FILE [--name N] [--bmap F]   upload an image (raw or zstd; optional .bmap)
  image list | show NAME | rm NAME
  profile set NAME --image I [--disk RULE] [--kernel-args A] [--boot B]
                                         RULE: path:/dev/X, serial:S, first:SIZE (default first:1GiB)
                                         B: how imaged nodes boot: kexec (default), local (exit to the
                                         disk's boot loader), custom --kernel URL [--initrd URL]
  profile list | show NAME | rm NAME
  vm create [--node ID] [--vcpus N] [--memory M] --package P [--set K=V]...
                                         run a guest (placed on a Ready node with room)
  vm list | show ID [-o json]
  vm start|stop|reboot|delete ID
environment: LOOM_ADDR (default http://127.0.0.1:8080), LOOM_TOKEN`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loom", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, usage) }
	tokenFile := fs.String("token-file", "", "file holding the operator token (default: $LOOM_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := &client.Client{BaseURL: getenv("LOOM_ADDR"), Token: getenv("LOOM_TOKEN")}
	if c.BaseURL == "" {
		c.BaseURL = "http://127.0.0.1:8080"
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return err
		}
		c.Token = strings.TrimSpace(string(b))
	}
	rest := fs.Args()
	if len(rest) >= 2 {
		switch rest[0] + " " + rest[1] {
		case "node provision", "node reprovision", "node watch", "node decommission":
			return nodeCmd(ctx, c, rest[1], rest[2:], stdout, stderr)
		case "node bmc", "node power":
			return powerCmd(ctx, c, rest[1], rest[2:], stdout, stderr)
		}
		switch rest[0] {
		case "image":
			return imageCmd(ctx, c, rest[1], rest[2:], stdout, stderr)
		case "profile":
			return profileCmd(ctx, c, rest[1], rest[2:], stdout, stderr)
		case "vm":
			return vmCmd(ctx, c, rest[1], rest[2:], stdout, stderr)
		case "credential":
			return credentialCmd(ctx, c, rest[1], rest[2:], os.Stdin, stdout, stderr)
		case "rack":
			return rackCmd(ctx, c, rest[1], rest[2:], os.Stdin, stdout, stderr)
		}
	}
	switch {
	case len(rest) == 1 && rest[0] == "nodes":
		nodes, err := c.Nodes(ctx)
		if err != nil {
			return err
		}
		return nodeTable(stdout, nodes, time.Now())
	case len(rest) == 1 && rest[0] == "leases":
		leases, err := c.Leases(ctx)
		if err != nil {
			return err
		}
		return leaseTable(stdout, leases, time.Now())
	case len(rest) >= 3 && rest[0] == "node" && rest[1] == "show":
		sub := flag.NewFlagSet("node show", flag.ContinueOnError)
		sub.SetOutput(stderr)
		format := sub.String("o", "text", "output: text or json")
		if err := sub.Parse(rest[3:]); err != nil {
			return err
		}
		n, err := c.Node(ctx, rest[2])
		if err != nil {
			return err
		}
		if *format == "json" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(n)
		}
		return nodeDetail(stdout, n, time.Now())
	}
	fs.Usage()
	return errors.New("unknown command")
}

func leaseTable(w io.Writer, leases []api.Lease, now time.Time) error {
	slices.SortFunc(leases, func(a, b api.Lease) int {
		x, _ := netip.ParseAddr(a.IP)
		y, _ := netip.ParseAddr(b.IP)
		return x.Compare(y)
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IP\tMAC\tHOSTNAME\tEXPIRES\tRELAY\tCIRCUIT\tREMOTE")
	for _, l := range leases {
		exp := "in " + l.Expires.Sub(now).Round(time.Second).String()
		if !l.Expires.After(now) {
			exp = "expired " + ago(l.Expires, now)
		}
		relay, circuit, remote := "-", "-", "-"
		if l.Relay != nil {
			relay, circuit, remote = l.Relay.GIAddr, orDash(l.Relay.CircuitID), orDash(l.Relay.RemoteID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.IP, l.MAC, orDash(l.Hostname), exp, relay, circuit, remote)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesHuman(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

func nodeTable(w io.Writer, nodes []api.Node, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMAC\tIP\tPHASE\tCPUS\tMEMORY\tDISKS\tLAST SEEN")
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
		ip := n.IP
		if ip == "" {
			ip = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, n.MAC, ip, phaseText(n), cpus, mem, disks, ago(n.LastSeen, now))
	}
	return tw.Flush()
}

func nodeDetail(w io.Writer, n api.Node, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID:\t%s\n", n.ID)
	fmt.Fprintf(tw, "Phase:\t%s (since %s)\n", n.Phase, n.PhaseChanged.Format(time.RFC3339))
	fmt.Fprintf(tw, "MAC:\t%s\n", n.MAC)
	fmt.Fprintf(tw, "IP:\t%s\n", n.IP)
	if n.Rack != "" {
		fmt.Fprintf(tw, "Rack:\t%s slot %s\n", n.Rack, dash(n.Slot))
	}
	fmt.Fprintf(tw, "Last seen:\t%s\n", ago(n.LastSeen, now))
	fmt.Fprintf(tw, "Agent:\t%s (%s mode)\n", n.AgentVersion, n.Mode)
	if n.Accel != nil {
		fmt.Fprintf(tw, "Guests run:\t%s\n", n.Accel)
	}
	if b := n.BMC; b != nil {
		power := "power not read yet"
		if b.Power != "" {
			power = "power " + b.Power + " " + ago(b.PowerChecked, now)
		}
		fmt.Fprintf(tw, "BMC:\t%s %s (credential %s), %s\n", b.Protocol, b.Address, b.Credential, power)
		if b.LastAction != "" {
			fmt.Fprintf(tw, "Last power action:\t%s\n", b.LastAction)
		}
	}
	if n.Profile != "" {
		fmt.Fprintf(tw, "Profile:\t%s (generation %d, imaged %d)\n", n.Profile, n.Provision, n.Imaged)
	}
	if n.Reason != "" {
		fmt.Fprintf(tw, "Reason:\t%s\n", n.Reason)
	}
	if n.Decommission {
		fmt.Fprintf(tw, "Decommission:\t%s\n", dash(n.Wiped))
	}
	if p := n.Progress; p != nil {
		fmt.Fprintf(tw, "Imaging:\t%s\n", progressText(p))
	}
	for i, h := range n.History {
		label := ""
		if i == 0 {
			label = "History:"
		}
		line := fmt.Sprintf("%s  %s → %s", h.At.Format("15:04:05.000"), h.From, h.To)
		if h.From == "" {
			line = fmt.Sprintf("%s  %s", h.At.Format("15:04:05.000"), h.To)
		}
		if h.Reason != "" {
			line += " (" + h.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, line)
	}
	if inv := n.Inventory; inv != nil {
		fmt.Fprintf(tw, "System:\t%s %s (serial %q, uuid %s)\n", inv.DMI.Vendor, inv.DMI.Product, inv.DMI.Serial, inv.DMI.UUID)
		fmt.Fprintf(tw, "CPU:\t%d × %s\n", inv.CPU.Count, inv.CPU.Model)
		fmt.Fprintf(tw, "Memory:\t%s\n", bytesHuman(inv.Memory))
		for _, nic := range inv.NICs {
			link := "down"
			if nic.Link {
				link = "up"
			}
			speed := ""
			if nic.SpeedMbps > 0 {
				speed = fmt.Sprintf(" %d Mb/s", nic.SpeedMbps)
			}
			fmt.Fprintf(tw, "NIC %s:\t%s link %s%s\n", nic.Name, nic.MAC, link, speed)
		}
		for _, d := range inv.Disks {
			kind := "ssd"
			if d.Rotational {
				kind = "rotational"
			}
			if d.Removable {
				kind += ", removable"
			}
			fmt.Fprintf(tw, "Disk %s:\t%s %s serial %q (%s)\n", d.Name, bytesHuman(d.SizeBytes), d.Model, d.Serial, kind)
		}
	} else {
		fmt.Fprintf(tw, "Inventory:\tnone yet (the node has not registered)\n")
	}
	return tw.Flush()
}
