package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func (a *app) credentialCmd() *cobra.Command {
	credential := &cobra.Command{Use: "credential", Short: "Store and list BMC credentials (passwords are never shown)"}

	var user, pwFile string
	set := &cobra.Command{
		Use:               "set NAME --username U --password-file F",
		Short:             "Store a BMC credential (the password comes from a file or, with '-', standard input)",
		Args:              args(1),
		ValidArgsFunction: a.complete(credentialNames),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			var pw []byte
			var err error
			if pwFile == "-" {
				pw, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 4096))
			} else {
				pw, err = os.ReadFile(pwFile)
			}
			if err != nil {
				return fmt.Errorf("credential set: reading the password: %w", err)
			}
			cr, err := c.PutCredential(ctx, api.Credential{Name: args[0], Username: user, Password: strings.TrimRight(string(pw), "\r\n")})
			if err != nil {
				return err
			}
			return a.show(cmd, cr, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "credential %s (user %s) stored\n", cr.Name, cr.Username)
				return err
			})
		}),
	}
	set.Flags().StringVar(&user, "username", "", "BMC user name")
	set.Flags().StringVar(&pwFile, "password-file", "", "file holding the password ('-': standard input); never on the command line")
	_ = set.MarkFlagRequired("password-file")

	ls := listCmd(a, "list", "List BMC credentials", (*client.Client).Credentials, func(w io.Writer, cs []api.Credential) error {
		var rows [][]string
		for _, cr := range cs {
			rows = append(rows, []string{cr.Name, cr.Username})
		}
		return table(w, "NAME | USERNAME", rows)
	})
	credential.AddCommand(set, ls)
	return credential
}
