package main

import (
	"context"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// names lists what one kind of argument can be, asking loomd.
type names func(ctx context.Context, c *client.Client) ([]string, error)

func nodeIDs(ctx context.Context, c *client.Client) ([]string, error) {
	ns, err := c.Nodes(ctx)
	return collect(ns, func(n api.Node) string { return n.ID }), err
}

func imageNames(ctx context.Context, c *client.Client) ([]string, error) {
	ms, err := c.Images(ctx)
	return collect(ms, func(m api.Manifest) string { return m.Name }), err
}

func profileNames(ctx context.Context, c *client.Client) ([]string, error) {
	ps, err := c.Profiles(ctx)
	return collect(ps, func(p api.Profile) string { return p.Name }), err
}

func vmIDs(ctx context.Context, c *client.Client) ([]string, error) {
	vs, err := c.VMs(ctx)
	return collect(vs, func(v api.VM) string { return v.ID }), err
}

func rackNames(ctx context.Context, c *client.Client) ([]string, error) {
	rs, err := c.Racks(ctx)
	return collect(rs, func(r api.RackSummary) string { return r.Rack }), err
}

func credentialNames(ctx context.Context, c *client.Client) ([]string, error) {
	cs, err := c.Credentials(ctx)
	return collect(cs, func(c api.Credential) string { return c.Name }), err
}

// fixed offers the same words whatever loomd holds.
func fixed(words ...string) names {
	return func(context.Context, *client.Client) ([]string, error) { return words, nil }
}

func collect[T any](xs []T, name func(T) string) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		out = append(out, name(x))
	}
	slices.Sort(out)
	return out
}

// complete completes the i-th positional argument from kinds[i]; past the
// last kind it offers nothing (and no file names).
func (a *app) complete(kinds ...names) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= len(kinds) {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return a.offer(cmd, kinds[len(args)], toComplete)
	}
}

// completeFlag completes a flag's value from one kind.
func (a *app) completeFlag(cmd *cobra.Command, flag string, kind names) {
	_ = cmd.RegisterFlagCompletionFunc(flag, func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return a.offer(cmd, kind, toComplete)
	})
}

func (a *app) offer(cmd *cobra.Command, kind names, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	c, err := a.api()
	if err != nil {
		cobra.CompErrorln(err.Error())
		return nil, cobra.ShellCompDirectiveError
	}
	all, err := kind(cmd.Context(), c)
	if err != nil {
		cobra.CompErrorln(err.Error())
		return nil, cobra.ShellCompDirectiveError
	}
	var out []cobra.Completion
	for _, s := range all {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
