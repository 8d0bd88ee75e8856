package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func (a *app) rackCmd() *cobra.Command {
	rack := &cobra.Command{Use: "rack", Short: "Enroll, power and follow whole racks"}
	name := a.complete(rackNames)

	imp := &cobra.Command{
		Use:   "import FILE.csv",
		Short: "Enroll a rack's servers before they boot ('-': standard input)",
		Long: `Enroll a rack's servers before they boot. The CSV's header names its
columns, in any order: mac, rack, slot, profile, bmc_address, bmc_protocol,
credential, bmc_insecure. A file with any bad line imports nothing; every
problem is reported with its line and field.`,
		Args: args(1),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			var b []byte
			var err error
			if args[0] == "-" {
				b, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), api.MaxBodyBytes+1))
			} else {
				b, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			res, err := c.ImportRack(ctx, b)
			if err != nil {
				return err
			}
			return a.show(cmd, res, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "imported %d servers: %d new (Enrolled), %d known already\n", len(res.Created)+len(res.Updated), len(res.Created), len(res.Updated))
				return err
			})
		}),
	}

	ls := listCmd(a, "list", "List racks with their nodes by phase", (*client.Client).Racks, func(w io.Writer, racks []api.RackSummary) error {
		var rows [][]string
		for _, r := range racks {
			rows = append(rows, []string{r.Rack, fmt.Sprint(r.Nodes), phaseCounts(r.Phases)})
		}
		return table(w, "RACK | NODES | PHASES", rows)
	})

	show := oneCmd(a, "show RACK", "Show one rack's servers by slot, with their power and state", rackNames, rackNodes, rackTable)

	powerOn := &cobra.Command{
		Use:               "power-on RACK",
		Short:             "Boot every server of a rack through its BMC (from the network once, where it is still to be imaged)",
		Args:              args(1),
		ValidArgsFunction: name,
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			return a.powerRack(ctx, c, cmd, args[0], "on")
		}),
	}
	power := &cobra.Command{
		Use:               "power status|on|off|cycle RACK",
		Short:             "Power every server of a rack through its BMC",
		Args:              args(2),
		ValidArgsFunction: a.complete(fixed("status", "on", "off", "cycle"), rackNames),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			return a.powerRack(ctx, c, cmd, args[1], args[0])
		}),
	}

	var timeout, every time.Duration
	watch := &cobra.Command{
		Use:   "watch RACK",
		Short: "Follow a rack until every server is Ready or Failed; fails if any failed",
		Long: `Follow a rack until every server is Ready or Failed, then print a summary
with each server's time. On a terminal the table is redrawn; otherwise a line
is printed per change. The exit status is non-zero if any server failed.`,
		Args:              args(1),
		ValidArgsFunction: name,
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			w := cmd.OutOrStdout()
			return rackWatch(ctx, c, args[0], every, w, isTerminal(w))
		}),
	}
	watch.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: never)")
	watch.Flags().DurationVar(&every, "every", 2*time.Second, "how often to look")

	rack.AddCommand(imp, ls, show, powerOn, power, watch)
	return rack
}

func (a *app) powerRack(ctx context.Context, c *client.Client, cmd *cobra.Command, rack, op string) error {
	res, err := c.PowerRack(ctx, rack, op)
	if err != nil {
		return err
	}
	failed := 0
	var rows [][]string
	for _, n := range res.Nodes {
		if n.Error != "" {
			failed++
		}
		rows = append(rows, []string{dash(n.Slot), n.Node, dash(n.Power), n.Error})
	}
	if err := a.show(cmd, res, func(w io.Writer) error { return table(w, "SLOT | NODE | POWER | ERROR", rows) }); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("rack %s: power %s failed on %d of %d nodes", rack, op, failed, len(res.Nodes))
	}
	return nil
}

func rackNodes(c *client.Client, ctx context.Context, rack string) ([]api.Node, error) {
	nodes, err := c.RackNodes(ctx, rack)
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("rack %s has no nodes (loom rack import FILE)", rack)
	}
	slices.SortFunc(nodes, func(a, b api.Node) int {
		if api.SlotLess(a, b) {
			return -1
		}
		return 1
	})
	return nodes, nil
}

// rackLine is one node's state as rack show and watch print it.
func rackLine(n api.Node) string {
	state := string(n.Phase)
	if p := n.Progress; n.Phase == api.PhaseImaging && p != nil && p.Total > 0 {
		state = fmt.Sprintf("Imaging %3d%% %s", p.Bytes*100/p.Total, progressText(p))
	}
	if n.Phase == api.PhaseFailed && n.Reason != "" {
		state += ": " + n.Reason
	}
	return state
}

func rackTable(w io.Writer, nodes []api.Node) error {
	var rows [][]string
	for _, n := range nodes {
		power := "-"
		if n.BMC != nil {
			power = dash(n.BMC.Power)
		}
		rows = append(rows, []string{dash(n.Slot), n.ID, n.MAC, dash(n.IP), power, rackLine(n)})
	}
	return table(w, "SLOT | NODE | MAC | IP | POWER | STATE", rows)
}

// rackWatch follows a rack until every node is Ready or Failed, then
// prints a summary; it fails if any node failed. On a terminal it redraws
// the table; otherwise it prints a line per change.
func rackWatch(ctx context.Context, c *client.Client, rack string, every time.Duration, w io.Writer, tty bool) error {
	start := time.Now()
	last := map[string]string{}
	doneAt := map[string]time.Duration{}
	for {
		nodes, err := rackNodes(c, ctx, rack)
		if err != nil {
			return err
		}
		finished := 0
		for _, n := range nodes {
			line := rackLine(n)
			if n.Phase == api.PhaseReady || n.Phase == api.PhaseFailed {
				finished++
				if _, ok := doneAt[n.ID]; !ok {
					doneAt[n.ID] = time.Since(start)
				}
			}
			if !tty && last[n.ID] != line {
				fmt.Fprintf(w, "%s  %-6s %s  %s\n", time.Now().Format("15:04:05"), dash(n.Slot), n.ID, line)
			}
			last[n.ID] = line
		}
		if tty {
			fmt.Fprintf(w, "\033[H\033[2Jrack %s: %d of %d done, %s\n\n", rack, finished, len(nodes), time.Since(start).Round(time.Second))
			if err := rackTable(w, nodes); err != nil {
				return err
			}
		}
		if finished == len(nodes) {
			return rackSummary(w, rack, nodes, doneAt, time.Since(start))
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(w, "rack %s: %d of %d nodes done when the watch ended (%v)\n", rack, finished, len(nodes), ctx.Err())
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

func rackSummary(w io.Writer, rack string, nodes []api.Node, doneAt map[string]time.Duration, took time.Duration) error {
	var failed []api.Node
	for _, n := range nodes {
		if n.Phase == api.PhaseFailed {
			failed = append(failed, n)
		}
	}
	fmt.Fprintf(w, "\nrack %s: %d of %d Ready, %d Failed, in %s\n", rack, len(nodes)-len(failed), len(nodes), len(failed), took.Round(time.Second))
	for _, n := range nodes {
		fmt.Fprintf(w, "  %-6s %s  %-6s after %s\n", dash(n.Slot), n.ID, n.Phase, doneAt[n.ID].Round(time.Second))
	}
	for _, n := range failed {
		fmt.Fprintf(w, "  failed: %s (slot %s): %s\n", n.ID, dash(n.Slot), n.Reason)
	}
	if len(failed) > 0 {
		return fmt.Errorf("rack %s: %d of %d nodes failed", rack, len(failed), len(nodes))
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
