package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func (a *app) clusterCmd() *cobra.Command {
	cluster := &cobra.Command{Use: "cluster", Short: "The control plane's replicas: status, add, remove"}

	status := &cobra.Command{
		Use:   "status",
		Short: "List the replicas: leader, each one's health, raft index lag and store size",
		Args:  args(0),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			s, err := c.ClusterStatus(ctx)
			if err != nil {
				return err
			}
			s.Members = list(s.Members)
			return a.show(cmd, s, func(w io.Writer) error {
				var rows [][]string
				for _, m := range s.Members {
					role := "follower"
					switch {
					case m.Leader:
						role = "leader"
					case m.Learner:
						role = "learner"
					}
					health := "healthy"
					if !m.Healthy {
						health = "unhealthy: " + m.Error
					}
					rows = append(rows, []string{m.Name, m.ID, role, health, strconv.FormatUint(m.RaftIndex, 10), strconv.FormatUint(m.Lag, 10),
						mib(m.DBSize) + " (" + mib(m.DBInUse) + " in use)", strings.Join(m.PeerURLs, " "), m.API})
				}
				leader := s.Leader
				if leader == "" {
					leader = "none"
				}
				if _, err := fmt.Fprintf(w, "cluster %s, leader %s\n", s.ClusterID, leader); err != nil {
					return err
				}
				return table(w, "NAME | ID | ROLE | HEALTH | RAFT INDEX | LAG | STORE | PEER | API", rows)
			})
		}),
	}

	var peer string
	add := &cobra.Command{
		Use:   "add NAME --peer-url URL",
		Short: "Add a replica's member to the running cluster and print the flags to start it with",
		Args:  args(1),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			added, err := c.ClusterAdd(ctx, api.MemberAdd{Name: args[0], PeerURL: peer})
			if err != nil {
				return err
			}
			return a.show(cmd, added, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "member %s (%s) added; start its loomd with:\n  loomd %s --data-dir DIR ...\n", added.Name, added.ID, strings.Join(added.Flags, " "))
				return err
			})
		}),
	}
	add.Flags().StringVar(&peer, "peer-url", "", "http://HOST:PORT the new replica's etcd member will listen on for its peers")
	_ = add.MarkFlagRequired("peer-url")

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a replica's member (one that is gone for good, or lost its data directory)",
		Args:  args(1),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			if err := c.ClusterRemove(ctx, args[0]); err != nil {
				return err
			}
			return a.show(cmd, map[string]string{"removed": args[0]}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "member %s removed\n", args[0])
				return err
			})
		}),
	}
	cluster.AddCommand(status, add, remove)
	return cluster
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
