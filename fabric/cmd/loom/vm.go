package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// settingsFlag collects repeated --set KEY=VALUE.
type settingsFlag map[string]string

func (s settingsFlag) String() string { return "" }
func (s settingsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	s[k] = val
	return nil
}

func vmCmd(ctx context.Context, c *client.Client, verb string, args []string, stdout, stderr io.Writer) error {
	switch verb {
	case "create":
		fs := flag.NewFlagSet("vm create", flag.ContinueOnError)
		fs.SetOutput(stderr)
		req := api.VMRequest{Settings: map[string]string{}}
		fs.StringVar(&req.Node, "node", "", "node to place the VM on (default: a Ready node with room)")
		fs.IntVar(&req.VCPUs, "vcpus", 1, "virtual CPUs")
		mem := fs.String("memory", "256MiB", "memory (MiB, GiB; a bare number is MiB)")
		fs.StringVar(&req.Package, "package", "", "role package (a stored image, see images/roles)")
		fs.Var(settingsFlag(req.Settings), "set", "a setting KEY=VALUE for the role (repeatable)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		mb, err := memoryMB(*mem)
		if err != nil {
			return fmt.Errorf("vm create: --memory: %w", err)
		}
		req.MemoryMB = mb
		vm, err := c.CreateVM(ctx, req)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", vm.ID)
		fmt.Fprintf(stderr, "vm %s: placed on node %s (%d vCPUs, %d MiB, package %s)\n", vm.ID, vm.Node, vm.VCPUs, vm.MemoryMB, vm.Package)
		return nil
	case "list":
		vms, err := c.VMs(ctx)
		if err != nil {
			return err
		}
		return vmTable(stdout, vms)
	case "show":
		fs := flag.NewFlagSet("vm show", flag.ContinueOnError)
		fs.SetOutput(stderr)
		format := fs.String("o", "text", "output: text or json")
		if len(args) == 0 {
			return fmt.Errorf("vm show: missing VM ID")
		}
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		vm, err := c.VM(ctx, args[0])
		if err != nil {
			return err
		}
		if *format == "json" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(vm)
		}
		return vmDetail(stdout, vm, time.Now())
	case "start", "stop", "reboot", "delete":
		if len(args) != 1 {
			return fmt.Errorf("vm %s: want one VM ID", verb)
		}
		vm, err := c.VMAction(ctx, args[0], api.VMAction(verb))
		if err != nil {
			return err
		}
		if verb == "delete" {
			fmt.Fprintf(stdout, "vm %s: deleting\n", args[0])
		} else {
			fmt.Fprintf(stdout, "vm %s: %s requested (desired %s, state %s)\n", vm.ID, verb, vm.Desired, vm.State)
		}
		return nil
	}
	return fmt.Errorf("unknown command vm %s (want create, list, show, start, stop, reboot or delete)", verb)
}

func memoryMB(s string) (int, error) {
	if n, err := fmt.Sscanf(s, "%d", new(int)); err == nil && n == 1 && !strings.ContainsAny(s, "KMGTBi") {
		s += "MiB"
	}
	b, err := api.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if b%(1<<20) != 0 {
		return 0, fmt.Errorf("%q is not a whole number of MiB", s)
	}
	return int(b >> 20), nil
}

func vmTable(w io.Writer, vms []api.VM) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNODE\tPACKAGE\tVCPUS\tMEMORY\tDESIRED\tSTATE\tENDPOINT\tRESTARTS")
	for _, v := range vms {
		ep := v.Endpoint
		if ep == "" {
			ep = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d MiB\t%s\t%s\t%s\t%d\n", v.ID, v.Node, v.Package, v.VCPUs, v.MemoryMB, v.Desired, v.State, ep, v.Restarts)
	}
	return tw.Flush()
}

func vmDetail(w io.Writer, v api.VM, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID:\t%s\n", v.ID)
	fmt.Fprintf(tw, "Node:\t%s\n", v.Node)
	fmt.Fprintf(tw, "Package:\t%s\n", v.Package)
	fmt.Fprintf(tw, "Size:\t%d vCPUs, %d MiB\n", v.VCPUs, v.MemoryMB)
	fmt.Fprintf(tw, "Desired:\t%s\n", v.Desired)
	fmt.Fprintf(tw, "State:\t%s\n", v.State)
	if v.Reason != "" {
		fmt.Fprintf(tw, "Reason:\t%s\n", v.Reason)
	}
	if v.Endpoint != "" {
		fmt.Fprintf(tw, "Endpoint:\t%s\n", v.Endpoint)
	}
	fmt.Fprintf(tw, "Restarts:\t%d\n", v.Restarts)
	fmt.Fprintf(tw, "Reboots:\t%d requested, %d done\n", v.RebootGen, v.Rebooted)
	if len(v.Interfaces) > 0 {
		fmt.Fprintf(tw, "Guest sees:\t%s\n", strings.Join(v.Interfaces, ", "))
	}
	if u := v.Usage; u != nil {
		fmt.Fprintf(tw, "Usage:\tCPU %.1fs, memory %s, channel %s\n", u.CPUSeconds, bytesHuman(u.MemoryBytes), bytesHuman(u.ChannelBytes))
	}
	fmt.Fprintf(tw, "Last report:\t%s\n", ago(v.Observed, now))
	keys := make([]string, 0, len(v.Settings))
	for k := range v.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		label := ""
		if i == 0 {
			label = "Settings:"
		}
		fmt.Fprintf(tw, "%s\t%s=%s\n", label, k, v.Settings[k])
	}
	return tw.Flush()
}
