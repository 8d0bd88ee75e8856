package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

const outCSV = "csv"

func (a *app) usageCmd() *cobra.Command {
	var since, svc string
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Usage records for billing: instance-seconds and channel bytes per service, role and size (-o table|csv|json)",
		Long: `Usage records: for each metering period (a minute by default), what each
service role of each size used: instance-seconds (instances Running) and
the bytes their channels carried. --since takes a time (RFC 3339) or a
duration back from now (24h).`,
		Args: args(0),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			from, err := parseSince(since, a.now())
			if err != nil {
				return err
			}
			us, err := c.Usage(ctx, from, svc)
			if err != nil {
				return err
			}
			if a.output == outCSV {
				return usageCSV(cmd.OutOrStdout(), us)
			}
			return a.show(cmd, list(us), func(w io.Writer) error {
				var rows [][]string
				var secs float64
				var bytes uint64
				for _, u := range us {
					rows = append(rows, []string{u.Start.Local().Format("2006-01-02 15:04:05"), u.End.Sub(u.Start).Round(time.Second).String(),
						u.Service, u.Role, fmt.Sprintf("%d vCPU %d MiB", u.VCPUs, u.MemoryMB), fmt.Sprintf("%.0f", u.InstanceSeconds), bytesHuman(u.ChannelBytes)})
					secs += u.InstanceSeconds
					bytes += u.ChannelBytes
				}
				if len(us) > 0 {
					rows = append(rows, []string{"total", "", "", "", "", fmt.Sprintf("%.0f", secs), bytesHuman(bytes)})
				}
				return table(w, "PERIOD START | LENGTH | SERVICE | ROLE | SIZE | INSTANCE-SECONDS | CHANNEL", rows)
			})
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "periods ending at or after this time (RFC 3339) or this long ago (24h)")
	cmd.Flags().StringVar(&svc, "service", "", "one service's records")
	a.completeFlag(cmd, "service", serviceNames)
	return cmd
}

func usageCSV(w io.Writer, us []api.UsageRecord) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"start", "end", "service", "role", "vcpus", "memory_mb", "instance_seconds", "channel_bytes"}) // errors surface at Flush
	for _, u := range us {
		_ = cw.Write([]string{u.Start.Format(time.RFC3339), u.End.Format(time.RFC3339), u.Service, u.Role, strconv.Itoa(u.VCPUs), strconv.Itoa(u.MemoryMB),
			strconv.FormatFloat(u.InstanceSeconds, 'f', 3, 64), strconv.FormatUint(u.ChannelBytes, 10)}) // errors surface at Flush
	}
	cw.Flush()
	return cw.Error()
}

// parseSince reads --since: a time (RFC 3339) or a duration back from now
// (24h); "" is the beginning.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, fmt.Errorf("--since %q: want a time such as 2026-11-24T12:00:00Z or a duration such as 24h", s)
	}
	return t, nil
}
