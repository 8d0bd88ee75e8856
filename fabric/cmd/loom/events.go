package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func (a *app) eventsCmd() *cobra.Command {
	var since, object string
	var limit int
	var follow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "The fabric's history: phase and state changes of nodes and VMs, operators' actions",
		Long: `loom events lists what happened, oldest first: a node's phase or a VM's state
changing (from → to, why, and who moved it: the node's agent, a VM's host,
the fabric or DHCP), objects made and removed, and every operator write
(the token's name, the request, its status). --object keeps one node's or
VM's; --since takes a time (RFC 3339) or a duration back from now (1h);
--follow goes on printing events as they happen until interrupted.`,
		Args: args(0),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			from, err := parseSince(since, a.now())
			if err != nil {
				return err
			}
			q := client.EventQuery{Object: object, Since: from, Limit: limit}
			if follow {
				w := cmd.OutOrStdout()
				return c.FollowEvents(ctx, q, func(e api.Event) error {
					if a.output != outTable {
						return a.show(cmd, e, nil)
					}
					_, err := fmt.Fprintln(w, strings.Join(eventRow(e), "  "))
					return err
				})
			}
			evs, err := c.Events(ctx, q)
			if err != nil {
				return err
			}
			return a.show(cmd, list(evs), func(w io.Writer) error { return eventTable(w, evs) })
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "from this time (RFC 3339) or this long ago (1h)")
	cmd.Flags().StringVar(&object, "object", "", "only this node's or VM's (its ID)")
	cmd.Flags().IntVar(&limit, "limit", 1000, "at most this many, the newest")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	return cmd
}

func eventRow(e api.Event) []string {
	change := e.To
	if e.From != "" {
		change = e.From + " → " + e.To
	}
	return []string{e.Time.Format(time.RFC3339), e.Kind, dash(e.Object), change, dash(e.Actor), e.Reason}
}

func eventTable(w io.Writer, evs []api.Event) error {
	var rows [][]string
	for _, e := range evs {
		rows = append(rows, eventRow(e))
	}
	return table(w, "TIME | KIND | OBJECT | CHANGE | BY | WHY", rows)
}
