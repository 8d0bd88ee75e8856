package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func phaseText(n api.Node) string {
	if n.Phase == api.PhaseImaging && n.Progress != nil && n.Progress.Total > 0 {
		return fmt.Sprintf("Imaging %d%%", n.Progress.Bytes*100/n.Progress.Total)
	}
	return string(n.Phase)
}

func progressText(p *api.Progress) string {
	s := fmt.Sprintf("%s of %s", bytesHuman(p.Bytes), bytesHuman(p.Total))
	if p.BytesPerS > 0 {
		s += fmt.Sprintf(", %s/s, ETA %s", bytesHuman(uint64(p.BytesPerS)), (time.Duration(p.ETASeconds) * time.Second).String())
	}
	return s
}

func nodeCmd(ctx context.Context, c *client.Client, verb string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	profile := fs.String("profile", "", "profile to provision with")
	if len(args) == 0 {
		return fmt.Errorf("node %s: missing node ID", verb)
	}
	id := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch verb {
	case "provision":
		if *profile == "" {
			return errors.New("node provision: --profile is required")
		}
		n, err := c.Provision(ctx, id, *profile)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "node %s: provisioning with profile %s (generation %d)\n", n.ID, n.Profile, n.Provision)
	case "reprovision":
		n, err := c.Reprovision(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "node %s: reprovisioning with profile %s (generation %d)\n", n.ID, n.Profile, n.Provision)
	case "watch":
		return watch(ctx, c, id, stdout)
	case "decommission":
		n, err := c.Decommission(ctx, id)
		if err != nil {
			return err
		}
		how := "its maintenance agent wipes it"
		if n.BMC != nil {
			how = "booting it into the maintenance OS through its BMC; powered off when wiped"
		}
		fmt.Fprintf(stdout, "node %s: decommissioning (every disk erased the strongest way it offers): %s\n", n.ID, how)
	}
	return nil
}

// watch draws a progress bar until the node is Ready or Failed.
func watch(ctx context.Context, c *client.Client, id string, w io.Writer) error {
	last := ""
	for {
		n, err := c.Node(ctx, id)
		if err != nil {
			return err
		}
		line := string(n.Phase)
		if p := n.Progress; n.Phase == api.PhaseImaging && p != nil && p.Total > 0 {
			const width = 40
			done := int(p.Bytes * width / p.Total)
			line = fmt.Sprintf("Imaging [%s%s] %3d%% %s", strings.Repeat("#", done), strings.Repeat(".", width-done), p.Bytes*100/p.Total, progressText(p))
		}
		if line != last {
			fmt.Fprintf(w, "\r\033[K%s %s", time.Now().Format("15:04:05"), line)
			last = line
		}
		switch n.Phase {
		case api.PhaseReady:
			fmt.Fprintln(w)
			return nil
		case api.PhaseFailed:
			fmt.Fprintln(w)
			return fmt.Errorf("node %s failed: %s", id, n.Reason)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(w)
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func imageCmd(ctx context.Context, c *client.Client, verb string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("image "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "image name (default: the file name without extensions)")
	bmap := fs.String("bmap", "", "bmaptool .bmap file describing the image")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	switch verb {
	case "add":
		if len(pos) != 1 {
			return errors.New("image add FILE [--name N] [--bmap F]")
		}
		f, err := os.Open(pos[0])
		if err != nil {
			return err
		}
		defer f.Close()
		if *name == "" {
			*name = strings.ToLower(strings.SplitN(filepath.Base(pos[0]), ".", 2)[0])
		}
		var bm io.Reader
		if *bmap != "" {
			b, err := os.Open(*bmap)
			if err != nil {
				return err
			}
			defer b.Close()
			bm = b
		}
		m, err := c.AddImage(ctx, *name, f, bm)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "image %s: %s, %s logical, %s of data, digest %s\n", m.Name, m.Format, bytesHuman(m.Size), bytesHuman(m.DataBytes), m.Digest)
	case "list":
		ms, err := c.Images(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tFORMAT\tSIZE\tDATA\tSTORED\tDIGEST")
		for _, m := range ms {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.12s\n", m.Name, m.Format, bytesHuman(m.Size), bytesHuman(m.DataBytes), bytesHuman(m.BlobSize), m.Digest)
		}
		return tw.Flush()
	case "show":
		if len(pos) != 1 {
			return errors.New("image show NAME")
		}
		m, err := c.Image(ctx, pos[0])
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	case "rm":
		if len(pos) != 1 {
			return errors.New("image rm NAME")
		}
		return c.RemoveImage(ctx, pos[0])
	default:
		return fmt.Errorf("image %s: unknown (want add, list, show, rm)", verb)
	}
	return nil
}

func profileCmd(ctx context.Context, c *client.Client, verb string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("profile "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var p api.Profile
	fs.StringVar(&p.Image, "image", "", "image for the host partition")
	fs.StringVar(&p.Disk, "disk", "", "disk rule: path:/dev/X, serial:S or first:SIZE (default first:1GiB)")
	fs.StringVar(&p.KernelArgs, "kernel-args", "", "extra host kernel arguments")
	fs.StringVar(&p.Boot, "boot", "", "how an imaged node boots from the network: kexec (default), local (its disk's boot loader) or custom")
	fs.StringVar(&p.Kernel, "kernel", "", "with --boot custom: the kernel's http(s) URL")
	fs.StringVar(&p.Initrd, "initrd", "", "with --boot custom: the initrd's http(s) URL")
	pos, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	switch verb {
	case "set":
		if len(pos) != 1 {
			return errors.New("profile set NAME --image I [--disk RULE] [--kernel-args A] [--boot kexec|local|custom --kernel URL --initrd URL]")
		}
		p.Name = pos[0]
		out, err := c.PutProfile(ctx, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "profile %s: image %s, disk %s\n", out.Name, out.Image, out.Disk)
	case "list":
		ps, err := c.Profiles(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tIMAGE\tDISK\tBOOT\tKERNEL ARGS")
		for _, p := range ps {
			boot := p.Boot
			if boot == "" {
				boot = api.BootKexec
			}
			if boot == api.BootCustom {
				boot += " " + p.Kernel
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, p.Image, p.Disk, boot, p.KernelArgs)
		}
		return tw.Flush()
	case "show", "rm":
		if len(pos) != 1 {
			return fmt.Errorf("profile %s NAME", verb)
		}
		if verb == "rm" {
			return c.DeleteProfile(ctx, pos[0])
		}
		ps, err := c.Profiles(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Name == pos[0] {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(p)
			}
		}
		return fmt.Errorf("profile %q not found", pos[0])
	default:
		return fmt.Errorf("profile %s: unknown (want set, list, show, rm)", verb)
	}
	return nil
}

// parseMixed parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return pos, nil
}
