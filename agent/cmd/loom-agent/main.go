// Command loom-agent is Loom's node agent. Modes:
//
//	loom-agent maintenance   the uinit of the maintenance OS (the default)
//	loom-agent host          the uinit of the host OS
//	loom-agent guest         the uinit of a guest VM (talks only over the channel)
//	loom-agent write-image   write one image onto a disk, verified (see writeimage.go)
//
// In maintenance and host mode it never exits: an error is logged and the agent
// starts over after a pause, because a dying uinit would leave the machine
// dead on the rack.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/loomfabric/loom/agent/lifecycle"
	"github.com/loomfabric/loom/fabric/api"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loom-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("loom-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mode := "maintenance"
	if fs.NArg() > 0 {
		mode = fs.Arg(0)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("agent", mode)
	switch mode {
	case api.ModeMaintenance, api.ModeHost:
		fmt.Fprintln(stderr, "LOOM-MARK start mode="+mode+" version="+lifecycle.Version)
		cfg := &lifecycle.Config{Mode: mode, Console: stderr}
		for {
			err := cfg.Run(ctx, log)
			log.Error("agent stopped; starting over in 10s", "mode", mode, "err", err)
			time.Sleep(10 * time.Second)
		}
	case "guest":
		fmt.Fprintln(stderr, "LOOM-MARK start mode=guest version="+lifecycle.Version)
		return (&lifecycle.Config{Console: stderr}).RunGuest(ctx, log)
	case "write-image":
		return writeImage(ctx, fs.Args()[1:], os.Stdout, stderr, log)
	default:
		return fmt.Errorf("unknown mode %q (want maintenance, host, guest or write-image)", mode)
	}
}
