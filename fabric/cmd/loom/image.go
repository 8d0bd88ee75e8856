package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

func (a *app) imageCmd() *cobra.Command {
	image := &cobra.Command{Use: "image", Short: "Upload, list, show and remove images (host OS images and role packages)"}

	var as, bmap string
	add := &cobra.Command{
		Use:   "add FILE",
		Short: "Upload an image (raw or zstd; a .bmap makes imaging skip the holes)",
		Args:  args(1),
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer func() { _ = f.Close() }() // read only: a failed close loses nothing
			n := as
			if n == "" {
				n = strings.ToLower(strings.SplitN(filepath.Base(args[0]), ".", 2)[0])
			}
			var bm io.Reader
			if bmap != "" {
				b, err := os.Open(bmap)
				if err != nil {
					return err
				}
				defer func() { _ = b.Close() }()
				bm = b
			}
			m, err := c.AddImage(ctx, n, f, bm)
			if err != nil {
				return err
			}
			return a.show(cmd, m, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "image %s: %s, %s logical, %s of data, digest %s\n", m.Name, m.Format, bytesHuman(m.Size), bytesHuman(m.DataBytes), m.Digest)
				return err
			})
		}),
	}
	add.Flags().StringVar(&as, "name", "", "image name (default: the file name without extensions)")
	add.Flags().StringVar(&bmap, "bmap", "", "bmaptool .bmap file describing the image")

	ls := listCmd(a, "list", "List images", (*client.Client).Images, func(w io.Writer, ms []api.Manifest) error {
		var rows [][]string
		for _, m := range ms {
			rows = append(rows, []string{m.Name, string(m.Format), bytesHuman(m.Size), bytesHuman(m.DataBytes), bytesHuman(m.BlobSize), shortDigest(m.Digest)})
		}
		return table(w, "NAME | FORMAT | SIZE | DATA | STORED | DIGEST", rows)
	})

	show := oneCmd(a, "show NAME", "Show one image's manifest", imageNames, (*client.Client).Image, func(w io.Writer, m api.Manifest) error {
		f := newFields(w)
		f.add("Name", "%s", m.Name)
		f.add("Format", "%s", m.Format)
		f.add("Size", "%s logical, %s of data in %d ranges", bytesHuman(m.Size), bytesHuman(m.DataBytes), len(m.Ranges))
		f.add("Stored", "%s", bytesHuman(m.BlobSize))
		f.add("Digest", "%s", m.Digest)
		return f.flush()
	})

	rm := rmCmd(a, "Remove an image no profile or VM uses", imageNames, (*client.Client).RemoveImage)
	image.AddCommand(add, ls, show, rm)
	return image
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

func (a *app) profileCmd() *cobra.Command {
	profile := &cobra.Command{Use: "profile", Short: "Set, list, show and remove profiles (what a node is imaged with and how it boots)"}
	name := a.complete(profileNames)

	var p api.Profile
	set := &cobra.Command{
		Use:   "set NAME --image I",
		Short: "Create or change a profile",
		Long: `Create or change a profile.

  --disk RULE   path:/dev/X, serial:S or first:SIZE (default first:1GiB)
  --boot B      how an imaged node boots from the network: kexec (default),
                local (exit to its disk's boot loader), or custom with
                --kernel URL [--initrd URL]`,
		Args:              args(1),
		ValidArgsFunction: name,
		RunE: a.runE(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			out, err := c.PutProfile(ctx, p)
			if err != nil {
				return err
			}
			return a.show(cmd, out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "profile %s: image %s, disk %s\n", out.Name, out.Image, out.Disk)
				return err
			})
		}),
	}
	f := set.Flags()
	f.StringVar(&p.Image, "image", "", "image for the host partition")
	f.StringVar(&p.Disk, "disk", "", "disk rule: path:/dev/X, serial:S or first:SIZE (default first:1GiB)")
	f.StringVar(&p.KernelArgs, "kernel-args", "", "extra host kernel arguments")
	f.StringVar(&p.Boot, "boot", "", "how an imaged node boots from the network: kexec (default), local or custom")
	f.StringVar(&p.Kernel, "kernel", "", "with --boot custom: the kernel's http(s) URL")
	f.StringVar(&p.Initrd, "initrd", "", "with --boot custom: the initrd's http(s) URL")
	f.StringVar(&p.Wipe, "wipe", "", "how the disk is wiped before imaging: signatures (default), discard, zero or secure")
	a.completeFlag(set, "image", imageNames)
	a.completeFlag(set, "boot", fixed(api.BootKexec, api.BootLocal, api.BootCustom))

	ls := listCmd(a, "list", "List profiles", (*client.Client).Profiles, func(w io.Writer, ps []api.Profile) error {
		var rows [][]string
		for _, p := range ps {
			rows = append(rows, []string{p.Name, p.Image, p.Disk, bootText(p), p.KernelArgs})
		}
		return table(w, "NAME | IMAGE | DISK | BOOT | KERNEL ARGS", rows)
	})

	show := oneCmd(a, "show NAME", "Show one profile", profileNames, profileByName, func(w io.Writer, p api.Profile) error {
		f := newFields(w)
		f.add("Name", "%s", p.Name)
		f.add("Image", "%s", p.Image)
		f.add("Disk", "%s", p.Disk)
		f.add("Boot", "%s", bootText(p))
		if p.Initrd != "" {
			f.add("Initrd", "%s", p.Initrd)
		}
		f.add("Wipe", "%s", dash(p.Wipe))
		f.add("Kernel args", "%s", dash(p.KernelArgs))
		return f.flush()
	})

	rm := rmCmd(a, "Remove a profile no node uses", profileNames, (*client.Client).DeleteProfile)
	profile.AddCommand(set, ls, show, rm)
	return profile
}

// profileByName finds one profile (the API lists them whole).
func profileByName(c *client.Client, ctx context.Context, name string) (api.Profile, error) {
	ps, err := c.Profiles(ctx)
	if err != nil {
		return api.Profile{}, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	return api.Profile{}, fmt.Errorf("profile %q not found", name)
}

func bootText(p api.Profile) string {
	boot := p.Boot
	if boot == "" {
		boot = api.BootKexec
	}
	if boot == api.BootCustom {
		boot += " " + p.Kernel
	}
	return boot
}

// rmCmd is "rm NAME": remove one object of a kind.
func rmCmd(a *app, short string, kind names, del func(*client.Client, context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use:               "rm NAME",
		Short:             short,
		Args:              args(1),
		ValidArgsFunction: a.complete(kind),
		RunE: a.runE(func(ctx context.Context, c *client.Client, _ *cobra.Command, args []string) error {
			return del(c, ctx, args[0])
		}),
	}
}
