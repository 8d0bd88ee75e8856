// Command boot measures the maintenance OS: its size (kernel + initramfs as
// served) and the wall time from QEMU start to Registered in loomd's API,
// booting over the network (-boot n: QEMU's iPXE ROM, DHCP, HTTP) in a
// fresh namespace with a fresh loomd each round; then on to Ready: the
// host image (build/images/host.ext4) is the default profile, so each
// server is imaged and kexecs into its host OS. Times come from the node's
// phase history. Median of -rounds boots.
//
// There is no peer to run here (tinyIPA and HookOS are not reachable from
// this machine), so the size ratios use their published sizes and say so.
//
// Last line: bench boot: maint_mb=… registered_s=… ready_s=… registered_to_ready_s=…
// vs_tinyipa_size=… vs_hookos_size=…
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
	hostImage := fs.String("host-image", "build/images/host.ext4", "host image")
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
	acc, err := lab.DecideAccel(ctx, ".", "", nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "bench boot: maintenance OS %.2f MB (kernel + initramfs), servers under %s, %d rounds\n", mb, acc, *rounds)

	var reg, ready, between []float64
	for r := 0; r < *rounds; r++ {
		t, err := once(ctx, bin, boot, *hostImage, acc)
		if err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		fmt.Fprintf(out, "  round %d: Registered after %.1fs, Ready after %.1fs (imaging + kexec + host boot %.1fs)\n", r, t.registered, t.ready, t.ready-t.registered)
		reg, ready, between = append(reg, t.registered), append(ready, t.ready), append(between, t.ready-t.registered)
	}
	fmt.Fprintf(out, "bench boot: maint_mb=%.2f registered_s=%.1f ready_s=%.1f registered_to_ready_s=%.1f vs_tinyipa_size=%.1f vs_hookos_size=%.1f accel=%s (peer sizes are published figures, not measured here)\n",
		mb, median(reg), median(ready), median(between), tinyIPAMB/mb, hookOSMB/mb, acc.Accel)
	return nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

type timing struct{ registered, ready float64 }

// once boots one server from a fresh loomd and returns seconds from QEMU
// start to Registered and to Ready.
func once(ctx context.Context, bin, boot, hostImage string, acc api.Accel) (timing, error) {
	dir, err := os.MkdirTemp("", "loom-bench-boot-")
	if err != nil {
		return timing{}, err
	}
	defer lab.RemoveAll(dir)
	ln, err := lab.NewNet(ctx, "loom-bb-"+lab.Suffix(), netip.MustParsePrefix("10.78.0.1/24"))
	if err != nil {
		return timing{}, err
	}
	defer lab.Cleanup(ln.Close)
	ld, fabric, err := ln.StartLoomd(ctx, lab.Loomd{
		Bin: bin, DataDir: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "sock"),
		BootDir: boot, Log: filepath.Join(dir, "loomd.log"), Args: []string{"--ipv6-ra", "--default-profile", "host", "--grace", "60s"},
	})
	if err != nil {
		return timing{}, err
	}
	defer func() { _ = ld.Process.Signal(syscall.SIGTERM) }() // gone already is fine
	if err := lab.SetUpHostProfile(ctx, fabric, "host", hostImage); err != nil {
		return timing{}, err
	}
	srv := lab.Server{Name: "b", MAC: lab.NewMAC(), UUID: lab.NewUUID(), CPUs: 1, MemoryMB: 1536, DiskGB: 4, Dir: filepath.Join(dir, "s"), NoReboot: true, Accel: acc}
	start := time.Now()
	q, err := ln.Start(ctx, srv, "tapb")
	if err != nil {
		return timing{}, err
	}
	defer lab.Kill(q)
	n, err := lab.WaitNode(ctx, fabric, srv.MAC, 8*time.Minute, func(n api.Node) bool {
		return n.Phase == api.PhaseReady || n.Phase == api.PhaseFailed
	})
	if err == nil && n.Phase == api.PhaseFailed {
		err = fmt.Errorf("node failed: %s", n.Reason)
	}
	if err != nil {
		return timing{}, errors.Join(err, fmt.Errorf("console:\n%s", lab.Tail(srv.SerialLog(), 20)))
	}
	var t timing
	for _, h := range n.History {
		switch h.To {
		case api.PhaseRegistered:
			if t.registered == 0 {
				t.registered = h.At.Sub(start).Seconds()
			}
		case api.PhaseReady:
			t.ready = h.At.Sub(start).Seconds()
		}
	}
	if t.registered == 0 || t.ready == 0 {
		return timing{}, fmt.Errorf("node history lacks Registered or Ready: %+v", n.History)
	}
	return t, nil
}
