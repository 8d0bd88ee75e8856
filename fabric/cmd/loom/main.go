// Command loom is the operator's CLI for loomd.
//
// It finds loomd through --addr (default $LOOM_ADDR, else
// http://127.0.0.1:8080; a unix:///path socket works too) and its operator
// token through --token-file (default $LOOM_TOKEN). Every command takes
// -o table|json|yaml and --help; `loom completion bash|zsh|fish` prints a
// completion script that completes node ids, image, profile, VM, rack and
// credential names from loomd.
//
//	loom nodes                              a table of every node
//	loom node show ID                       one node's full inventory
//	loom node provision ID --profile P      image the node with profile P
//	loom node watch ID                      live imaging progress until Ready or Failed
//	loom rack import FILE.csv               enroll a rack (see fabric/rack for the columns)
//	loom image add FILE [--name N] [--bmap F.bmap]
//	loom profile set NAME --image I [--disk RULE] [--kernel-args A]
//	loom vm create [--node ID] --vcpus N --memory M --package P [--set K=V]
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/pki"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loom:", err)
		os.Exit(1)
	}
}

// DefaultAddr is where loom looks for loomd without --addr or $LOOM_ADDR.
const DefaultAddr = "https://127.0.0.1:8080"

// Output formats (-o).
const (
	outTable = "table"
	outJSON  = "json"
	outYAML  = "yaml"
)

// app holds what every command shares: the global flags and the client
// they make.
type app struct {
	addr, tokenFile, caFile, output string
	getenv                          func(string) string
	now                             func() time.Time
	c                               *client.Client
}

// run runs one loom command line; main and the tests call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := newRoot(getenv)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func newRoot(getenv func(string) string) *cobra.Command {
	a := &app{getenv: getenv, now: time.Now}
	root := &cobra.Command{
		Use:   "loom",
		Short: "Operate a Loom fabric: nodes, racks, images, profiles, VMs",
		Long: `loom talks to loomd's API. It finds loomd through --addr ($LOOM_ADDR,
default ` + DefaultAddr + `; unix:///path for a socket), checks its TLS
certificate against the fabric's CA in --ca-file ($LOOM_CA; loomd writes it
to DATA-DIR/ca.pem) and authenticates with the operator token in
--token-file ($LOOM_TOKEN otherwise).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.output {
			case outTable, outJSON, outYAML:
				return nil
			case outCSV:
				if cmd.Name() == "usage" {
					return nil
				}
				return fmt.Errorf("-o csv: only loom usage writes CSV")
			case "text": // what `node show` and `vm show` called it before -o was global
				a.output = outTable
				return nil
			}
			return fmt.Errorf("-o %s: want table, json or yaml", a.output)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", cmp.Or(getenv("LOOM_ADDR"), DefaultAddr), "loomd's API: http(s)://host:port or unix:///path (env LOOM_ADDR)")
	pf.StringVar(&a.tokenFile, "token-file", "", "file holding the operator token (default: env LOOM_TOKEN)")
	pf.StringVar(&a.caFile, "ca-file", getenv("LOOM_CA"), "the fabric's CA certificate, which loomd's is checked against (loomd's DATA-DIR/ca.pem; env LOOM_CA)")
	pf.StringVarP(&a.output, "output", "o", outTable, "output format: table, json or yaml")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outTable, outJSON, outYAML}, cobra.ShellCompDirectiveNoFileComp))
	root.AddGroup(&cobra.Group{ID: "metal", Title: "Machines:"}, &cobra.Group{ID: "guests", Title: "Guests and services:"})
	for _, c := range []*cobra.Command{a.nodesCmd(), a.nodeCmd(), a.leasesCmd(), a.rackCmd(), a.imageCmd(), a.profileCmd(), a.credentialCmd(), a.clusterCmd(), a.tokenCmd(), a.auditCmd(), a.eventsCmd()} {
		c.GroupID = "metal"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.vmCmd(), a.serviceCmd(), a.instanceCmd(), a.usageCmd()} {
		c.GroupID = "guests"
		root.AddCommand(c)
	}
	return root
}

// api is the client for loomd, made once from the global flags.
func (a *app) api() (*client.Client, error) {
	if a.c != nil {
		return a.c, nil
	}
	c := &client.Client{BaseURL: a.addr, Token: a.getenv("LOOM_TOKEN")}
	if a.tokenFile != "" {
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
	}
	if a.caFile != "" {
		b, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		if c.TLS, err = pki.ClientTLS(b, nil); err != nil {
			return nil, fmt.Errorf("--ca-file %s: %w", a.caFile, err)
		}
	} else if strings.Contains(a.addr, "https://") {
		return nil, fmt.Errorf("--ca-file (or LOOM_CA) is needed to check loomd's certificate at %s: loomd writes its CA to DATA-DIR/ca.pem", a.addr)
	}
	a.c = c
	return c, nil
}

// runE adapts a command body that needs the client to cobra.
func (a *app) runE(f func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := a.api()
		if err != nil {
			return err
		}
		return f(cmd.Context(), c, cmd, args)
	}
}

// show prints v in the -o format: JSON or YAML of v itself, or, for
// people, what table writes.
func (a *app) show(cmd *cobra.Command, v any, table func(io.Writer) error) error {
	w := cmd.OutOrStdout()
	switch a.output {
	case outJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case outYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return table(w)
}

// list makes a nil slice print as [] rather than null.
func list[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// args checks the number of positional arguments and names them in the
// error: "node show: want ID; usage: loom node show ID [flags]".
func args(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		return fmt.Errorf("%s: want %d argument%s, got %d; usage: %s", cmd.CommandPath(), n, plural(n), len(args), cmd.UseLine())
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// listCmd is a command that prints every object of one kind: get fetches
// them, tbl writes them for people (-o json|yaml prints them as they are).
func listCmd[T any](a *app, use, short string, get func(*client.Client, context.Context) ([]T, error), tbl func(io.Writer, []T) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args(0),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, _ []string) error {
			xs, err := get(c, ctx)
			if err != nil {
				return err
			}
			return a.show(cmd, list(xs), func(w io.Writer) error { return tbl(w, xs) })
		}),
	}
}

// oneCmd is a command on one object, named by its only argument
// (completed from kind): do acts on it (or only fetches it) and returns it;
// say writes it for people (-o json|yaml prints it as it is).
func oneCmd[T any](a *app, use, short string, kind names, do func(*client.Client, context.Context, string) (T, error), say func(io.Writer, T) error) *cobra.Command {
	return &cobra.Command{
		Use:               use,
		Short:             short,
		Args:              args(1),
		ValidArgsFunction: a.complete(kind),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			x, err := do(c, ctx, args[0])
			if err != nil {
				return err
			}
			return a.show(cmd, x, func(w io.Writer) error { return say(w, x) })
		}),
	}
}

// sayf is a say for oneCmd that prints one line made from the object.
func sayf[T any](line func(T) string) func(io.Writer, T) error {
	return func(w io.Writer, x T) error {
		_, err := fmt.Fprintln(w, line(x))
		return err
	}
}
