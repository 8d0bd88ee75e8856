package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func (a *app) tokenCmd() *cobra.Command {
	token := &cobra.Command{Use: "token", Short: "Named operator tokens with a role: viewer, operator, admin (admin only)"}

	var role string
	create := &cobra.Command{
		Use:   "create NAME --role viewer|operator|admin",
		Short: "Make a token; its secret is printed this once (loomd keeps only its hash)",
		Args:  args(1),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			r, err := api.ParseRole(role)
			if err != nil {
				return fmt.Errorf("--role: %w", err)
			}
			t, err := c.CreateToken(ctx, args[0], r)
			if err != nil {
				return err
			}
			return a.show(cmd, t, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "token %s (%s); its secret, shown this once:\n%s\n", t.Name, t.Role, t.Secret)
				return err
			})
		}),
	}
	create.Flags().StringVar(&role, "role", "", "viewer (reads), operator (reads and writes) or admin (also tokens and replicas)")
	_ = create.MarkFlagRequired("role")
	_ = create.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"viewer", "operator", "admin"}, cobra.ShellCompDirectiveNoFileComp))

	ls := listCmd(a, "list", "List the tokens (never their secrets)", (*client.Client).Tokens, func(w io.Writer, ts []api.Token) error {
		var rows [][]string
		for _, t := range ts {
			rows = append(rows, []string{t.Name, string(t.Role), t.Created.Format(time.RFC3339), t.CreatedBy})
		}
		return table(w, "NAME | ROLE | CREATED | BY", rows)
	})

	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: refused from the next request on, on every replica",
		Args:  args(1),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			if err := c.RevokeToken(ctx, args[0]); err != nil {
				return err
			}
			return a.show(cmd, map[string]string{"revoked": args[0]}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "token %s revoked\n", args[0])
				return err
			})
		}),
	}
	token.AddCommand(create, ls, revoke)
	return token
}

func (a *app) auditCmd() *cobra.Command {
	var since string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "The audit log: every write through the API, who made it, when, and how it ended (admin)",
		Long: `loom audit lists the writes made through the API with an operator token or a
registration: time, who (a token's name; "operator" is the data directory's
token, "enroll" a registration), the method and path, and the result.
--since takes a time (RFC 3339) or a duration back from now (1h).`,
		Args: args(0),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			from, err := parseSince(since, a.now())
			if err != nil {
				return err
			}
			recs, err := c.Audit(ctx, from, limit)
			if err != nil {
				return err
			}
			return a.show(cmd, list(recs), func(w io.Writer) error {
				var rows [][]string
				for _, r := range recs {
					rows = append(rows, []string{r.Time.Format(time.RFC3339), r.Who, string(r.Role), r.Method + " " + r.Path, strconv.Itoa(r.Status), r.Error, r.From})
				}
				return table(w, "TIME | WHO | ROLE | WHAT | STATUS | ERROR | FROM", rows)
			})
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "from this time (RFC 3339) or this long ago (1h)")
	cmd.Flags().IntVar(&limit, "limit", 1000, "at most this many records")
	return cmd
}
