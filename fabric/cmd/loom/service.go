package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func serviceNames(ctx context.Context, c *client.Client) ([]string, error) {
	ss, err := c.Services(ctx)
	return collect(ss, func(s api.Service) string { return s.Name }), err
}

func (a *app) serviceCmd() *cobra.Command {
	svc := &cobra.Command{Use: "service", Short: `Services: roles with instance counts ("5 web and 3 worker instances") that the fabric keeps`}

	deploy := &cobra.Command{
		Use:   "deploy FILE",
		Short: "Deploy a service from its manifest (YAML; '-': standard input)",
		Long: `Deploy a service from its manifest. A manifest with anything wrong is
refused with every wrong line and field, and nothing of it is applied.

  name: guestbook
  updateDomains: 5              # default 5
  roles:
    - name: web
      kind: web                 # web or worker
      package: guestbook-web    # a stored image (loom image add)
      instances: 5
      vcpus: 1                  # default 1
      memory: 256MiB            # default 256MiB
      settings: {queue: entries}
      endpoint: {port: 80, protocol: http}   # web roles
    - name: worker
      kind: worker
      package: guestbook-worker
      instances: 3`,
		Args: args(1),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			b, err := readManifest(cmd, args[0])
			if err != nil {
				return err
			}
			s, err := c.DeployService(ctx, b)
			if err != nil {
				return err
			}
			return a.show(cmd, s, func(w io.Writer) error {
				var roles []string
				for _, r := range s.Roles {
					roles = append(roles, fmt.Sprintf("%d %s", r.Instances, r.Name))
				}
				_, err := fmt.Fprintf(w, "service %s: deployed (%s instances being placed; loom instance list %s)\n", s.Name, strings.Join(roles, " and "), s.Name)
				return err
			})
		}),
	}

	scale := &cobra.Command{
		Use:               "scale SERVICE ROLE N",
		Short:             "Set how many instances a role has",
		Args:              args(3),
		ValidArgsFunction: a.complete(serviceNames),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[2])
			if err != nil {
				return fmt.Errorf("instance count %q is not a number", args[2])
			}
			s, err := c.ScaleService(ctx, args[0], args[1], n)
			if err != nil {
				return err
			}
			return a.show(cmd, s, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "service %s: role %s scaled to %d instances\n", s.Name, args[1], n)
				return err
			})
		}),
	}

	ls := listCmd(a, "list", "List services with their roles' instance counts", (*client.Client).Services, func(w io.Writer, ss []api.Service) error {
		var rows [][]string
		for _, s := range ss {
			var roles []string
			for _, r := range s.Roles {
				roles = append(roles, fmt.Sprintf("%s (%s) %d", r.Name, r.Kind, r.Instances))
			}
			rows = append(rows, []string{s.Name, strings.Join(roles, ", "), fmt.Sprint(s.UpdateDomains), string(s.Upgrade)})
		}
		return table(w, "NAME | ROLES | UPDATE DOMAINS | UPGRADE", rows)
	})

	show := oneCmd(a, "show SERVICE", "Show a service: its roles and each instance", serviceNames, serviceWithInstances,
		func(w io.Writer, s serviceView) error {
			f := newFields(w)
			f.add("Name", "%s", s.Name)
			f.add("Update domains", "%d (upgrade %s)", s.UpdateDomains, s.Upgrade)
			for _, r := range s.Roles {
				ready := 0
				for _, in := range s.Instances {
					if in.Role == r.Name && in.State == api.InstanceReady {
						ready++
					}
				}
				line := fmt.Sprintf("%s, %d of %d Ready, %d vCPUs %d MiB each, package %s", r.Kind, ready, r.Instances, r.VCPUs, r.MemoryMB, r.Package)
				if r.Endpoint != nil {
					line += fmt.Sprintf(", endpoint %s port %d", r.Endpoint.Protocol, r.Endpoint.Port)
					for _, e := range s.Endpoints {
						switch {
						case e.Role != r.Name:
						case e.Address != "":
							line += fmt.Sprintf(" at %s (%d instances in rotation, %d connections)", e.Address, e.InRotation, e.Connections)
						case e.Error != "":
							line += " NOT LISTENING: " + e.Error
						}
					}
				}
				if h := r.Health; h != nil {
					line += fmt.Sprintf(", health GET %s every %v (timeout %v, out after %d failing)", h.Path, time.Duration(h.Interval), time.Duration(h.Timeout), h.Failures)
				} else {
					line += ", health: the package's own check"
				}
				f.add("Role "+r.Name, "%s", line)
			}
			if wk := s.Walk; wk != nil {
				line := fmt.Sprintf("%s (%s mode), domains done %v, to do %v", wk.State, wk.Mode, wk.Done, wk.Order)
				if wk.Reason != "" {
					line += ": " + wk.Reason
				}
				f.add("Upgrade", "%s", line)
				for _, e := range wk.History[max(0, len(wk.History)-10):] {
					d := fmt.Sprintf("domain %d ", e.Domain)
					if e.Domain < 0 {
						d = ""
					}
					f.add("", "%s %s%s %s", e.Time.Local().Format("15:04:05"), d, e.Event, e.Note)
				}
			}
			if err := f.flush(); err != nil {
				return err
			}
			fmt.Fprintln(w)
			return instanceTable(w, s.Instances)
		})

	del := deleteCmd(a, "service", "Delete a service and all its instances", serviceNames, (*client.Client).DeleteService, "its instances are being stopped and removed")
	var mode string
	upgrade := &cobra.Command{
		Use:   "upgrade SERVICE FILE",
		Short: "Upgrade a service to a new manifest, one update domain at a time ('-': standard input)",
		Long: `Upgrade a service to a new version of its manifest (new packages, settings,
instance counts). The update domains are walked one at a time: each
domain's instances leave the endpoint, restart into the new version and
must be Ready again within the manifest's upgradeTimeout; then the next
domain. A domain that fails rolls the whole service back, one domain at a
time. In manual mode each domain waits for 'loom service walk'.`,
		Args:              args(2),
		ValidArgsFunction: a.complete(serviceNames),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			b, err := readManifest(cmd, args[1])
			if err != nil {
				return err
			}
			s, err := c.UpgradeService(ctx, args[0], b, api.UpgradeMode(mode))
			if err != nil {
				return err
			}
			return a.show(cmd, s, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "service %s: upgrade %s (%s mode, %d update domains; loom service show %s)\n", s.Name, s.Walk.State, s.Walk.Mode, s.UpdateDomains, s.Name)
				return err
			})
		}),
	}
	upgrade.Flags().StringVar(&mode, "mode", "", "auto or manual (default: the manifest's)")
	walk := oneCmd(a, "walk SERVICE", "Let a manual upgrade do its next update domain", serviceNames, (*client.Client).WalkService,
		sayf(func(s api.Service) string {
			return fmt.Sprintf("service %s: upgrading update domain %d", s.Name, s.Walk.Order[0])
		}))

	queues := &cobra.Command{
		Use:               "queues SERVICE",
		Short:             "List a service's queues: messages waiting and hidden (delivered, not yet deleted)",
		Args:              args(1),
		ValidArgsFunction: a.complete(serviceNames),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			qs, err := c.Queues(ctx, args[0])
			if err != nil {
				return err
			}
			return a.show(cmd, list(qs), func(w io.Writer) error {
				var rows [][]string
				for _, q := range qs {
					rows = append(rows, []string{q.Name, fmt.Sprint(q.Messages), fmt.Sprint(q.Hidden)})
				}
				return table(w, "QUEUE | MESSAGES | HIDDEN", rows)
			})
		}),
	}
	svc.AddCommand(deploy, scale, upgrade, walk, ls, show, del, queues)
	return svc
}

// readManifest reads a manifest from a file, or standard input for "-".
func readManifest(cmd *cobra.Command, file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(io.LimitReader(cmd.InOrStdin(), api.MaxBodyBytes))
	}
	return os.ReadFile(file)
}

// serviceView is a service with its instances, as service show prints it.
type serviceView struct {
	api.Service
	Instances []api.Instance `json:"instances"`
}

func serviceWithInstances(c *client.Client, ctx context.Context, name string) (serviceView, error) {
	s, err := c.Service(ctx, name)
	if err != nil {
		return serviceView{}, err
	}
	ins, err := c.Instances(ctx, name)
	return serviceView{Service: s, Instances: list(ins)}, err
}

func (a *app) instanceCmd() *cobra.Command {
	instance := &cobra.Command{Use: "instance", Short: "The instances of services (each is a VM: loom vm start|stop|reboot ID acts on it)"}
	ls := &cobra.Command{
		Use:               "list [SERVICE]",
		Short:             "List instances: service, role, update and fault domain, node, state and why",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: a.complete(serviceNames),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			svc := ""
			if len(args) == 1 {
				svc = args[0]
			}
			ins, err := c.Instances(ctx, svc)
			if err != nil {
				return err
			}
			return a.show(cmd, list(ins), func(w io.Writer) error { return instanceTable(w, ins) })
		}),
	}
	instance.AddCommand(ls)
	for _, act := range []struct {
		action api.VMAction
		short  string
	}{
		{api.VMStart, "Start a stopped instance"},
		{api.VMStop, "Stop an instance (it still counts toward its role: scale the role down to have fewer)"},
		{api.VMReboot, "Reboot an instance"},
	} {
		instance.AddCommand(oneCmd(a, string(act.action)+" ID", act.short, instanceIDs,
			func(c *client.Client, ctx context.Context, id string) (api.VM, error) {
				v, err := c.VM(ctx, id)
				if err != nil {
					return api.VM{}, err
				}
				if v.Service == "" {
					return api.VM{}, fmt.Errorf("%s is a VM of no service (loom vm %s %s)", id, act.action, id)
				}
				return c.VMAction(ctx, id, act.action)
			},
			sayf(func(v api.VM) string {
				return fmt.Sprintf("instance %s (%s/%s): %s requested", v.ID, v.Service, v.Role, act.action)
			})))
	}
	return instance
}

func instanceIDs(ctx context.Context, c *client.Client) ([]string, error) {
	ins, err := c.Instances(ctx, "")
	return collect(ins, func(in api.Instance) string { return in.ID }), err
}

func instanceTable(w io.Writer, ins []api.Instance) error {
	var rows [][]string
	for _, in := range ins {
		rows = append(rows, []string{in.ID, in.Service, in.Role, fmt.Sprint(in.UpdateDomain), dash(in.FaultDomain), dash(in.Node), string(in.State), dash(in.Endpoint), in.Reason})
	}
	return table(w, "ID | SERVICE | ROLE | UD | RACK | NODE | STATE | ENDPOINT | REASON", rows)
}
