package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// powerCmd is `loom node bmc ID ...` and `loom node power OP ID`.
func powerCmd(ctx context.Context, c *client.Client, verb string, args []string, stdout, stderr io.Writer) error {
	switch verb {
	case "power":
		if len(args) != 2 {
			return errors.New("usage: loom node power status|on|off|cycle|pxe-once ID")
		}
		state, err := c.Power(ctx, args[1], args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "node %s: power %s\n", args[1], state)
		return nil
	}
	fs := flag.NewFlagSet("node bmc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var b api.BMC
	fs.StringVar(&b.Address, "address", "", "the BMC's URL or host[:port] (https by default)")
	fs.StringVar(&b.Credential, "credential", "", "name of the credential to log in with (loom credential set)")
	fs.StringVar(&b.Protocol, "protocol", api.BMCRedfish, "BMC protocol: redfish or ipmi (address host[:623])")
	fs.BoolVar(&b.Insecure, "insecure", false, "do not check the BMC's TLS certificate")
	if len(args) == 0 {
		return errors.New("node bmc: missing node ID")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	n, err := c.SetBMC(ctx, args[0], b)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s: BMC %s %s (credential %s)\n", n.ID, n.BMC.Protocol, n.BMC.Address, n.BMC.Credential)
	return nil
}

// credentialCmd is `loom credential set|list`.
func credentialCmd(ctx context.Context, c *client.Client, verb string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	switch verb {
	case "list":
		cs, err := c.Credentials(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tUSERNAME")
		for _, cr := range cs {
			fmt.Fprintf(tw, "%s\t%s\n", cr.Name, cr.Username)
		}
		return tw.Flush()
	case "set":
	default:
		return fmt.Errorf("credential %s: want set or list", verb)
	}
	fs := flag.NewFlagSet("credential set", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("username", "", "BMC user name")
	pwFile := fs.String("password-file", "", "file holding the password ('-': standard input)")
	if len(args) == 0 {
		return errors.New("credential set: missing NAME")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *pwFile == "" {
		return errors.New("credential set: --password-file is required (the password never goes on a command line)")
	}
	var pw []byte
	var err error
	if *pwFile == "-" {
		pw, err = io.ReadAll(io.LimitReader(stdin, 4096))
	} else {
		pw, err = os.ReadFile(*pwFile)
	}
	if err != nil {
		return fmt.Errorf("credential set: reading the password: %w", err)
	}
	cr, err := c.PutCredential(ctx, api.Credential{Name: args[0], Username: *user, Password: strings.TrimRight(string(pw), "\r\n")})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "credential %s (user %s) stored\n", cr.Name, cr.Username)
	return nil
}
