// Command boot measures the maintenance OS: its size (kernel + initramfs as
// served) and the wall time from QEMU start to Registered in loomd's API,
// booting over the network (-boot n: QEMU's iPXE ROM, DHCP, HTTP) in a
// fresh namespace with a fresh loomd each round. Median of -rounds boots.
//
// There is no peer to run here (tinyIPA and HookOS are not reachable from
// this machine), so the size ratios use their published sizes and say so.
//
// Last line: bench boot: maint_mb=… registered_s=… vs_tinyipa_size=… vs_hookos_size=…
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
)

// Published sizes (MB) of the peers' ramdisks, for the size ratio.
const (
	tinyIPAMB = 97  // OpenStack Ironic tinyIPA kernel + ramdisk
	hookOSMB  = 180 // Tinkerbell HookOS, compressed
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench boot:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("boot", flag.ContinueOnError)
	rounds := fs.Int("rounds", 5, "boots (median taken)")
	loomd := fs.String("loomd", "build/bin/loomd", "loomd binary")
	bootDir := fs.String("boot-dir", "build/maintenance", "maintenance OS")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := lab.Prereqs(); err != nil {
		return err
	}
	var size int64
	for _, f := range []string{"vmlinuz", "initramfs.cpio.xz"} {
		st, err := os.Stat(filepath.Join(*bootDir, f))
		if err != nil {
			return fmt.Errorf("%v (run 'make initramfs')", err)
		}
		size += st.Size()
	}
	mb := float64(size) / 1e6
	bin, _ := filepath.Abs(*loomd)
	boot, _ := filepath.Abs(*bootDir)
	fmt.Fprintf(out, "bench boot: maintenance OS %.2f MB (kernel + initramfs), accel %s, %d rounds\n", mb, lab.Accel(), *rounds)

	var times []float64
	for r := 0; r < *rounds; r++ {
		s, err := once(ctx, bin, boot)
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		fmt.Fprintf(out, "  round %d: Registered after %.1fs\n", r, s)
		times = append(times, s)
	}
	sort.Float64s(times)
	med := times[len(times)/2]
	fmt.Fprintf(out, "bench boot: maint_mb=%.2f registered_s=%.1f vs_tinyipa_size=%.1f vs_hookos_size=%.1f (peer sizes are published figures, not measured here)\n",
		mb, med, tinyIPAMB/mb, hookOSMB/mb)
	return nil
}

// once boots one server from a fresh loomd and returns seconds to Registered.
func once(ctx context.Context, bin, boot string) (float64, error) {
	dir, err := os.MkdirTemp("", "loom-bench-boot-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	ln, err := lab.NewNet(ctx, "loom-bb-"+lab.Suffix(), netip.MustParsePrefix("10.78.0.1/24"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	ld, fabric, err := ln.StartLoomd(ctx, lab.Loomd{
		Bin: bin, DataDir: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "sock"),
		BootDir: boot, Log: filepath.Join(dir, "loomd.log"), Args: []string{"--ipv6-ra"},
	})
	if err != nil {
		return 0, err
	}
	defer ld.Process.Signal(syscall.SIGTERM)
	srv := lab.Server{Name: "b", MAC: lab.NewMAC(), UUID: lab.NewUUID(), CPUs: 1, MemoryMB: 1024, DiskGB: 4, Dir: filepath.Join(dir, "s"), NoReboot: true}
	start := time.Now()
	q, err := ln.Start(ctx, srv, "tapb")
	if err != nil {
		return 0, err
	}
	defer func() { q.Process.Kill(); q.Wait() }()
	_, err = lab.WaitNode(ctx, fabric, srv.MAC, 5*time.Minute, func(n api.Node) bool { return n.Phase == api.PhaseRegistered })
	if err != nil {
		return 0, errors.Join(err, fmt.Errorf("console:\n%s", lab.Tail(srv.SerialLog(), 20)))
	}
	return time.Since(start).Seconds(), nil
}
