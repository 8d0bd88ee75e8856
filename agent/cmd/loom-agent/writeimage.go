package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/loomfabric/loom/agent/imaging"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/pki"
)

// writeImage is `loom-agent write-image`: write one image onto a device or
// file with the same verified writer the maintenance agent uses.
//
//	loom-agent write-image [--token T] [--ca-file CA] https://LOOMD/v1/images/NAME TARGET
//	loom-agent write-image --manifest M.json --blob FILE TARGET
func writeImage(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("write-image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	token := fs.String("token", os.Getenv("LOOM_TOKEN"), "token for loomd (enrollment or operator)")
	manifest := fs.String("manifest", "", "local manifest (JSON) instead of a loomd URL")
	blob := fs.String("blob", "", "local blob, with --manifest")
	caFile := fs.String("ca-file", os.Getenv("LOOM_CA"), "the fabric's CA certificate (loomd's DATA-DIR/ca.pem; env LOOM_CA) for an https URL")
	writers := fs.Int("writers", 4, "writes in flight at once")
	flushMiB := fs.Int64("flush-every", 256, "flush the disk in the background after each this many MiB written (0: only once at the end)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *writers < 1 || *writers > 64 {
		return fmt.Errorf("--writers %d: want 1 to 64", *writers)
	}
	var m api.Manifest
	var src imaging.Source
	var target string
	switch {
	case *manifest != "" && *blob != "" && fs.NArg() == 1:
		b, err := os.ReadFile(*manifest)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("%s: %w", *manifest, err)
		}
		f, err := os.Open(*blob)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }() // read only
		src, target = imaging.FileSource{F: f}, fs.Arg(0)
	case *manifest == "" && fs.NArg() == 2:
		url := strings.TrimRight(fs.Arg(0), "/")
		base, name, ok := strings.Cut(url, "/v1/images/")
		if !ok {
			return fmt.Errorf("%s: want https://LOOMD/v1/images/NAME", url)
		}
		c := &client.Client{BaseURL: base, Token: *token}
		if *caFile != "" {
			ca, err := os.ReadFile(*caFile)
			if err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
			if c.TLS, err = pki.ClientTLS(ca, nil); err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
		}
		var err error
		m, err = c.Image(ctx, name)
		if err != nil {
			return err
		}
		src, target = &imaging.HTTPSource{URL: url + "/blob", Token: *token, TLS: c.TLS}, fs.Arg(1)
	default:
		return errors.New("usage: write-image [--token T] [--ca-file CA] URL TARGET | write-image --manifest M --blob B TARGET")
	}
	f, err := imaging.OpenTarget(target)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // the writer syncs what it wrote; this only releases it
	start := time.Now()
	w := &imaging.Writer{Manifest: m, Source: src, Target: f, Log: log, FlushEvery: *flushMiB << 20, Writers: *writers}
	if *flushMiB <= 0 {
		w.FlushEvery = -1
	}
	if err := w.Write(ctx); err != nil {
		return fmt.Errorf("writing %s to %s: %w", m.Name, target, err)
	}
	d := time.Since(start)
	fmt.Fprintf(stdout, "wrote %s (%d bytes, %d of data in %d ranges) to %s in %.2fs, verified\n",
		m.Name, m.Size, m.DataBytes, len(m.Ranges), target, d.Seconds())
	return nil
}
