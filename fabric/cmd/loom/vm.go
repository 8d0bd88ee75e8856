package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func (a *app) vmCmd() *cobra.Command {
	vm := &cobra.Command{Use: "vm", Short: "Run guests: create, list, show, start, stop, reboot, delete"}

	req := api.VMRequest{Settings: map[string]string{}}
	var mem string
	create := &cobra.Command{
		Use:   "create --package P",
		Short: "Run a guest with a role package, on a Ready node with room (or --node); prints its ID",
		Args:  args(0),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			mb, err := memoryMB(mem)
			if err != nil {
				return fmt.Errorf("vm create: --memory: %w", err)
			}
			req.MemoryMB = mb
			v, err := c.CreateVM(ctx, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "vm %s: placed on node %s (%d vCPUs, %d MiB, package %s)\n", v.ID, v.Node, v.VCPUs, v.MemoryMB, v.Package)
			return a.show(cmd, v, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, v.ID)
				return err
			})
		}),
	}
	f := create.Flags()
	f.StringVar(&req.Node, "node", "", "node to place the VM on (default: a Ready node with room)")
	f.IntVar(&req.VCPUs, "vcpus", api.DefaultVCPUs, "virtual CPUs")
	f.StringVar(&mem, "memory", fmt.Sprintf("%dMiB", api.DefaultMemoryMB), "memory (MiB, GiB; a bare number is MiB)")
	f.StringVar(&req.Package, "package", "", "role package (a stored image, see images/roles)")
	f.Var(settingsFlag(req.Settings), "set", "a setting KEY=VALUE for the role (repeatable; the value may hold commas and '=')")
	_ = create.MarkFlagRequired("package")
	a.completeFlag(create, "package", imageNames)
	a.completeFlag(create, "node", nodeIDs)

	ls := listCmd(a, "list", "List VMs: where each runs, desired and actual state, endpoint, restarts", (*client.Client).VMs, vmTable)

	show := oneCmd(a, "show ID", "Show one VM: size, state, endpoint, usage, settings", vmIDs, (*client.Client).VM, func(w io.Writer, v api.VM) error { return vmDetail(w, v, a.now()) })

	vm.AddCommand(create, ls, show)
	for _, act := range []struct {
		action api.VMAction
		short  string
	}{
		{api.VMStart, "Start a stopped VM"},
		{api.VMStop, "Stop a VM (its guest agent is asked to shut down first)"},
		{api.VMReboot, "Reboot a VM"},
		{api.VMDelete, "Delete a VM and its disks"},
	} {
		vm.AddCommand(oneCmd(a, string(act.action)+" ID", act.short, vmIDs,
			func(c *client.Client, ctx context.Context, id string) (api.VM, error) {
				v, err := c.VMAction(ctx, id, act.action)
				if err == nil && act.action == api.VMDelete {
					// The API answers a delete with no body.
					v = api.VM{ID: id, Desired: api.VMDeleted}
				}
				return v, err
			},
			sayf(func(v api.VM) string {
				if act.action == api.VMDelete {
					return fmt.Sprintf("vm %s: deleting", v.ID)
				}
				return fmt.Sprintf("vm %s: %s requested (desired %s, state %s)", v.ID, act.action, v.Desired, v.State)
			})))

	}
	return vm
}

// settingsFlag collects repeated --set KEY=VALUE. (pflag's StringToString
// would split a value at its commas.)
type settingsFlag map[string]string

func (s settingsFlag) String() string { return "" }
func (s settingsFlag) Type() string   { return "KEY=VALUE" }
func (s settingsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	s[k] = val
	return nil
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
	var rows [][]string
	for _, v := range vms {
		rows = append(rows, []string{v.ID, v.Node, v.Package, fmt.Sprint(v.VCPUs), fmt.Sprintf("%d MiB", v.MemoryMB), string(v.Desired), string(v.State), dash(v.Endpoint), fmt.Sprint(v.Restarts)})
	}
	return table(w, "ID | NODE | PACKAGE | VCPUS | MEMORY | DESIRED | STATE | ENDPOINT | RESTARTS", rows)
}

func vmDetail(w io.Writer, v api.VM, now time.Time) error {
	f := newFields(w)
	f.add("ID", "%s", v.ID)
	f.add("Node", "%s", v.Node)
	f.add("Package", "%s", v.Package)
	f.add("Size", "%d vCPUs, %d MiB", v.VCPUs, v.MemoryMB)
	f.add("Desired", "%s", v.Desired)
	f.add("State", "%s", v.State)
	if v.Reason != "" {
		f.add("Reason", "%s", v.Reason)
	}
	if v.Endpoint != "" {
		f.add("Endpoint", "%s", v.Endpoint)
	}
	if v.Boot != "" {
		f.add("Started", "%s", v.Boot)
	}
	f.add("Restarts", "%d", v.Restarts)
	f.add("Reboots", "%d requested, %d done", v.RebootGen, v.Rebooted)
	if len(v.Interfaces) > 0 {
		f.add("Guest sees", "%s", strings.Join(v.Interfaces, ", "))
	}
	if u := v.Usage; u != nil {
		f.add("Usage", "CPU %.1fs, memory %s, channel %s", u.CPUSeconds, bytesHuman(u.MemoryBytes), bytesHuman(u.ChannelBytes))
	}
	f.add("Last report", "%s", ago(v.Observed, now))
	for i, k := range slices.Sorted(maps.Keys(v.Settings)) {
		label := ""
		if i == 0 {
			label = "Settings"
		}
		f.add(label, "%s=%s", k, v.Settings[k])
	}
	return f.flush()
}
