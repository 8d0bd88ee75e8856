// Command guest measures guest start: from the host agent being asked for
// a guest (its goal applied to the product's supervisor) to the role
// Ready (the guest agent's health report over the channel: package pulled
// over the channel, role started, HTTP probe answered), against a bare
// `qemu-system-x86_64 -kernel` boot of the same kernel and initramfs, in
// the same run: to its first console line (bare_s), and to u-root's init
// starting (bare_init_s), which is the floor under any agent. Median of
// -rounds each.
//
// The same from the host's saved state of the guest's machine (snap_s: the
// guest resumed from it, agent/snapshot; the state is built by the first
// start, timed apart as snap_build_s, and not counted in snap_s).
//
// Last line: bench guest: ready_s=… snap_s=… bare_s=… vs_bare=…
// overhead=… bare_init_s=… snap_build_s=… (overhead = ready_s / bare_s,
// cold; vs_bare = bare_s / snap_s: above 1, a guest resumed serves before
// a bare QEMU has printed its first line).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/loomfabric/loom/agent/accel"
	"github.com/loomfabric/loom/bench/internal/guestrig"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench guest:", err)
		os.Exit(1)
	}
}

// bare boots the kernel and initramfs with nothing else and times the
// first console line and the init banner.
func bare(guestDir string, acc api.Accel) (first, init float64, err error) {
	args := append([]string{"-machine", "q35"}, accel.Args(acc)...)
	cmd := exec.Command("qemu-system-x86_64", append(args, "-m", "256",
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
		"-kernel", filepath.Join(guestDir, "vmlinuz"), "-initrd", filepath.Join(guestDir, "initramfs.cpio.xz"),
		"-append", "console=ttyS0 panic=-1", "-serial", "stdio")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer lab.Kill(cmd)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if first == 0 && strings.TrimSpace(sc.Text()) != "" {
			first = time.Since(t0).Seconds()
		}
		if strings.Contains(sc.Text(), "Welcome to u-root") {
			return first, time.Since(t0).Seconds(), nil
		}
	}
	return 0, 0, fmt.Errorf("bare boot: no init banner on the console")
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("guest", flag.ContinueOnError)
	guestDir := fs.String("guest", "build/guest", "guest OS")
	pkg := fs.String("package", "build/roles/web.tar", "role package")
	rounds := fs.Int("rounds", 3, "starts of each kind (median taken)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, err := guestrig.New(ctx, *guestDir, *pkg, nil, "", true)
	if err != nil {
		return err
	}
	defer r.Close()
	snap, err := guestrig.New(ctx, *guestDir, *pkg, nil, "", false)
	if err != nil {
		return err
	}
	defer snap.Close()
	// start creates a guest on rig and times it to role Ready, then
	// deletes it.
	start := func(rig *guestrig.Rig, id string) (float64, api.VMStatus, error) {
		t0 := time.Now()
		rig.Sup.Apply([]api.GoalVM{rig.Goal(id, 256)})
		st, err := rig.Wait(id, 5*time.Minute, func(s api.VMStatus, _ bool) bool { return s.State == api.VMStateRunning })
		if err != nil {
			return 0, st, err
		}
		took := time.Since(t0).Seconds()
		rig.Sup.Apply(nil)
		_, err = rig.Wait(id, time.Minute, func(_ api.VMStatus, found bool) bool { return !found })
		return took, st, err
	}
	build, st, err := start(snap, "bench-build")
	if err != nil {
		return err
	}
	if st.Boot != "snapshot" {
		return fmt.Errorf("the first guest of the snapshot rig started %q, not from a snapshot", st.Boot)
	}
	fmt.Fprintf(out, "snapshot: built by the first start, create→role Ready %.2fs\n", build)
	var ready, snaps, firsts, inits []float64
	for i := range *rounds {
		took, _, err := start(r, fmt.Sprintf("bench-%d", i))
		if err != nil {
			return err
		}
		ready = append(ready, took)
		took, st, err := start(snap, fmt.Sprintf("bench-snap-%d", i))
		if err != nil {
			return err
		}
		if st.Boot != "snapshot" {
			return fmt.Errorf("guest bench-snap-%d started %q, not from the snapshot", i, st.Boot)
		}
		snaps = append(snaps, took)
		f, in, err := bare(*guestDir, r.Accel)
		if err != nil {
			return err
		}
		firsts, inits = append(firsts, f), append(inits, in)
		fmt.Fprintf(out, "round %d: loom create→role Ready %.2fs cold, %.2fs from the snapshot; bare qemu -kernel: first console line %.2fs, init %.2fs\n", i+1, ready[i], snaps[i], f, in)
	}
	rs, ss, bs, is := guestrig.Median(ready), guestrig.Median(snaps), guestrig.Median(firsts), guestrig.Median(inits)
	fmt.Fprintf(out, "bench guest: ready_s=%.2f snap_s=%.2f bare_s=%.2f vs_bare=%.2f overhead=%.2f bare_init_s=%.2f snap_build_s=%.2f accel=%s cpu=%s\n", rs, ss, bs, bs/ss, rs/bs, is, build, r.Accel.Accel, r.Accel.CPU)
	return nil
}
