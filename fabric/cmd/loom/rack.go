package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// rackCmd is `loom rack import|list|show|power-on|power|watch`.
func rackCmd(ctx context.Context, c *client.Client, verb string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	switch verb {
	case "import":
		if len(args) != 1 {
			return errors.New("usage: loom rack import FILE.csv ('-': stdin)")
		}
		var b []byte
		var err error
		if args[0] == "-" {
			b, err = io.ReadAll(io.LimitReader(stdin, api.MaxBodyBytes+1))
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
		fmt.Fprintf(stdout, "imported %d servers: %d new (Enrolled), %d known already\n", len(res.Created)+len(res.Updated), len(res.Created), len(res.Updated))
		return nil
	case "list":
		racks, err := c.Racks(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RACK\tNODES\tPHASES")
		for _, r := range racks {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", r.Rack, r.Nodes, phaseCounts(r.Phases))
		}
		return tw.Flush()
	case "show":
		if len(args) != 1 {
			return errors.New("usage: loom rack show RACK")
		}
		nodes, err := rackNodes(ctx, c, args[0])
		if err != nil {
			return err
		}
		return rackTable(stdout, nodes)
	case "power-on", "power":
		op := "on"
		if verb == "power" {
			if len(args) != 2 {
				return errors.New("usage: loom rack power status|on|off|cycle RACK")
			}
			op, args = args[0], args[1:]
		}
		if len(args) != 1 {
			return fmt.Errorf("usage: loom rack %s RACK", verb)
		}
		res, err := c.PowerRack(ctx, args[0], op)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SLOT\tNODE\tPOWER\tERROR")
		failed := 0
		for _, n := range res.Nodes {
			if n.Error != "" {
				failed++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", dash(n.Slot), n.Node, dash(n.Power), n.Error)
		}
		tw.Flush()
		if failed > 0 {
			return fmt.Errorf("rack %s: power %s failed on %d of %d nodes", args[0], op, failed, len(res.Nodes))
		}
		return nil
	case "watch":
		fs := flag.NewFlagSet("rack watch", flag.ContinueOnError)
		fs.SetOutput(stderr)
		timeout := fs.Duration("timeout", 0, "give up after this long (0: never)")
		every := fs.Duration("every", 2*time.Second, "how often to look")
		pos, err := parseMixed(fs, args)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return errors.New("usage: loom rack watch RACK [--timeout D]")
		}
		if *timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		return rackWatch(ctx, c, pos[0], *every, stdout, isTerminal(stdout))
	}
	return fmt.Errorf("unknown command: rack %s", verb)
}

func rackNodes(ctx context.Context, c *client.Client, rack string) ([]api.Node, error) {
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

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func phaseCounts(m map[api.Phase]int) string {
	var parts []string
	for p, n := range m {
		parts = append(parts, fmt.Sprintf("%s %d", p, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
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
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tNODE\tMAC\tIP\tPOWER\tSTATE")
	for _, n := range nodes {
		power := "-"
		if n.BMC != nil {
			power = dash(n.BMC.Power)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", dash(n.Slot), n.ID, n.MAC, dash(n.IP), power, rackLine(n))
	}
	return tw.Flush()
}

// rackWatch follows a rack until every node is Ready or Failed, then
// prints a summary; it fails if any node failed. On a terminal it redraws
// the table; otherwise it prints a line per change.
func rackWatch(ctx context.Context, c *client.Client, rack string, every time.Duration, w io.Writer, tty bool) error {
	start := time.Now()
	last := map[string]string{}
	doneAt := map[string]time.Duration{}
	for {
		nodes, err := rackNodes(ctx, c, rack)
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
			rackTable(w, nodes)
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
