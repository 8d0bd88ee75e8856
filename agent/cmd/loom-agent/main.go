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
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/agent/accel"
	"github.com/loomfabric/loom/agent/console"
	"github.com/loomfabric/loom/agent/guestagent"
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
	cfg := lifecycle.Config{Console: stderr}
	fs.StringVar(&cfg.Fabric, "fabric", "", "loomd's URL; with it the network is taken as it is (default: loom.fabric= on the kernel command line)")
	tokenFile := fs.String("token-file", "", "file with the enrollment token (with --fabric; or $LOOM_ENROLL_TOKEN)")
	caFile := fs.String("ca-file", os.Getenv("LOOM_CA"), "the fabric's CA certificate, loomd's DATA-DIR/ca.pem (with --fabric; or $LOOM_CA; default: /etc/loom/ca.pem)")
	fs.StringVar(&cfg.IP, "ip", "", "address to report (with --fabric; default: the route to the fabric)")
	fs.StringVar(&cfg.GuestDir, "guest-dir", "", "host mode: where guests live (default /var/lib/loom)")
	fs.StringVar(&cfg.GuestKernel, "guest-kernel", "", "host mode: the guest kernel (default /guest/vmlinuz)")
	fs.StringVar(&cfg.GuestInitrd, "guest-initrd", "", "host mode: the guest initramfs (default /guest/initramfs.cpio.xz)")
	snaps := fs.Bool("guest-snapshots", true, "host mode: resume guests from a saved state of a template guest of their machine, built once per machine (false: boot every guest cold)")
	accelFlag := fs.String("accel", os.Getenv("LOOM_ACCEL"), "host mode: how guests run: auto (probe KVM, fall back to TCG), kvm (fail unless KVM runs a guest) or tcg (default $LOOM_ACCEL, else auto)")
	fs.StringVar(&cfg.AccelCache, "accel-cache", "", "host mode: directory caching the accelerator probe's verdict (default: the guest directory)")
	fs.IntVar(&cfg.GuestVCPUs, "vcpus", 0, "host mode: vCPUs offered to guests (default: loom.vcpus= on the kernel command line, else the CPU count; more than the CPUs overcommits them)")
	fs.StringVar(&cfg.IngressIP, "ingress-ip", "", "host mode: address for web roles' ingress ports (default: the agent's IP)")
	// Flags may come before or after the mode.
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
		if rest[0] == "write-image" {
			rest = append(rest, args...)
			break
		}
	}
	cfg.ColdGuests = !*snaps
	m, err := accel.ParseMode(*accelFlag)
	if err != nil {
		return fmt.Errorf("--accel: %w", err)
	}
	cfg.Accel = m
	if cfg.GuestVCPUs < 0 || cfg.GuestVCPUs > api.MaxGuestVCPUs {
		return fmt.Errorf("--vcpus %d: want 1 to %d (or 0: the CPU count)", cfg.GuestVCPUs, api.MaxGuestVCPUs)
	}
	mode := "maintenance"
	if len(rest) > 0 {
		mode = rest[0]
	}
	if cfg.Fabric != "" {
		cfg.Token = os.Getenv("LOOM_ENROLL_TOKEN")
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return err
			}
			cfg.Token = strings.TrimSpace(string(b))
		}
		if cfg.Token == "" {
			return fmt.Errorf("--fabric needs the enrollment token (--token-file or $LOOM_ENROLL_TOKEN)")
		}
		if *caFile != "" {
			if cfg.CA, err = os.ReadFile(*caFile); err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
		}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("agent", mode)
	switch mode {
	case string(api.ModeMaintenance), string(api.ModeHost):
		console.Mark(stderr, "start", "mode", mode, "version", lifecycle.Version)
		cfg.Mode = api.Mode(mode)
		if cfg.Fabric != "" {
			// Run as a service: SIGTERM ends it (its guests keep running).
			var stop context.CancelFunc
			ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
			defer stop()
		}
		agent := lifecycle.New(cfg)
		for {
			err := agent.Run(ctx, log)
			if ctx.Err() != nil {
				log.Info("agent stopped", "mode", mode)
				return nil
			}
			if errors.Is(err, accel.ErrNoKVM) && cfg.Fabric != "" {
				return err // a service: the operator's --accel kvm cannot be met, say so at once
			}
			log.Error("agent stopped; starting over in 10s", "mode", mode, "err", err)
			time.Sleep(10 * time.Second)
		}
	case "guest":
		console.Mark(stderr, "start", "mode", "guest", "version", lifecycle.Version)
		return guestagent.Run(ctx, guestagent.Config{Console: stderr, Version: lifecycle.Version}, log)
	case "write-image":
		return writeImage(ctx, rest[1:], os.Stdout, stderr, log)
	default:
		return fmt.Errorf("unknown mode %q (want maintenance, host, guest or write-image)", mode)
	}
}
