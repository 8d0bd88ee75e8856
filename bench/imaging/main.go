// Command imaging benchmarks Loom's image writer (loom-agent write-image:
// holes zeroed by construction, data ranges sha256-verified as they stream,
// fsync, read-back) against dd, dd conv=sparse, bmaptool (verification on)
// and qemu-img convert, in the same run, on the same 4 GiB raw image that is
// ~20% data, written to a loop device attached with --direct-io=on.
//
// Twice: from a local file, and over HTTP on loopback (Loom from loomd's
// image server with Range requests; bmaptool and curl|dd from a plain Go
// file server). Every write is checked with cmp. Then once onto a target
// pre-filled with random bytes, to show who leaves stale bytes in holes.
//
// Last line: bench imaging: loom_mbps=… vs_bmaptool=… vs_dd=… vs_dd_sparse=…
// vs_qemu_img=… rss_mb=… (local; ratios > 1 mean Loom was faster).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/bench/internal/apirig"
	"github.com/loomfabric/loom/scripts/lab"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench imaging:", err)
		os.Exit(1)
	}
}

type tool struct {
	name string
	cmd  string // shell command; $IMG $DEV $BMAP $URL $LOOMURL $TOKEN $MANIFEST $BLOB
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("imaging", flag.ContinueOnError)
	sizeGiB := fs.Int("size", 4, "image size in GiB")
	dataPct := fs.Int("data", 20, "percent of the image that is data")
	rounds := fs.Int("rounds", 3, "rounds (median taken)")
	agent := fs.String("agent", "build/bin/loom-agent", "loom-agent binary")
	only := fs.String("tools", "", "comma-separated tools to run (default all)")
	loomd := fs.String("loomd", "build/bin/loomd", "loomd binary")
	straceDir := fs.String("strace", "", "after the rounds, run loom, bmaptool and qemu_img once more each under strace -c -f, keep the counts in this directory and print the system calls per MiB of data; loom's run also prints its phases")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (loop devices)")
	}
	for _, c := range []string{"losetup", "dd", "bmaptool", "qemu-img", "cmp", "curl", *agent, *loomd} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%s not found (run 'make deps build')", c)
		}
	}
	agentBin, _ := filepath.Abs(*agent)
	loomdBin, _ := filepath.Abs(*loomd)
	dir, err := os.MkdirTemp("/var/tmp", "loom-bench-imaging-")
	if err != nil {
		return err
	}
	defer lab.RemoveAll(dir)
	size := int64(*sizeGiB) << 30
	img := filepath.Join(dir, "image.raw")
	fmt.Fprintf(out, "bench imaging: making a %d GiB image, %d%% data\n", *sizeGiB, *dataPct)
	data, err := makeImage(img, size, *dataPct)
	if err != nil {
		return err
	}
	bmap := filepath.Join(dir, "image.bmap")
	if o, err := exec.Command("bmaptool", "create", "-o", bmap, img).CombinedOutput(); err != nil {
		return fmt.Errorf("bmaptool create: %v: %s", err, o)
	}

	// loomd on loopback, with the image uploaded to its store.
	ld, err := apirig.Start(ctx, loomdBin, dir)
	if err != nil {
		return err
	}
	defer ld.Stop()
	c, addr := ld.Client, ld.Addr
	f, err := os.Open(img)
	if err != nil {
		return err
	}
	t0 := time.Now()
	man, err := c.AddImage(ctx, "bench", f, nil)
	_ = f.Close() // read only
	if err != nil {
		return fmt.Errorf("uploading to loomd: %w", err)
	}
	blob := filepath.Join(dir, "loomd", "images", man.Digest)
	full, err := c.Image(ctx, "bench")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  uploaded to loomd in %.1fs: %d ranges, %d MiB of data\n", time.Since(t0).Seconds(), len(full.Ranges), full.DataBytes>>20)
	manifest := filepath.Join(dir, "manifest.json")
	if err := writeJSON(manifest, full); err != nil {
		return err
	}

	// A plain file server for the peers that fetch URLs.
	fsrv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = fsrv.Serve(fl) }() // ends with ErrServerClosed
	defer lab.Cleanup(fsrv.Close)

	// The target: a loop device over a file, direct I/O.
	backing := filepath.Join(dir, "target")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(backing, size); err != nil {
		return err
	}
	o, err := exec.Command("losetup", "--direct-io=on", "--show", "-f", backing).Output()
	if err != nil {
		return fmt.Errorf("losetup: %w", err)
	}
	dev := strings.TrimSpace(string(o))
	defer lab.Cleanup(exec.Command("losetup", "-d", dev).Run)

	env := []string{"IMG=" + img, "DEV=" + dev, "BMAP=" + bmap, "URL=http://" + fl.Addr().String() + "/image.raw",
		"LOOMURL=https://" + addr + "/v1/images/bench", "TOKEN=" + c.Token, "CA=" + filepath.Join(ld.Data, "ca.pem"), "MANIFEST=" + manifest, "BLOB=" + blob, "AGENT=" + agentBin}
	local := []tool{
		{"loom", `"$AGENT" write-image --manifest "$MANIFEST" --blob "$BLOB" "$DEV"`},
		{"dd", `dd if="$IMG" of="$DEV" bs=4M conv=fsync status=none`},
		{"dd_sparse", `dd if="$IMG" of="$DEV" bs=4M conv=sparse,fsync status=none`},
		{"bmaptool", `bmaptool -q copy --bmap "$BMAP" "$IMG" "$DEV"`},
		{"qemu_img", `qemu-img convert -n -f raw -O raw -t none "$IMG" "$DEV" && sync "$DEV"`},
	}
	remote := []tool{
		{"loom_http", `"$AGENT" write-image --token "$TOKEN" --ca-file "$CA" "$LOOMURL" "$DEV"`},
		{"bmaptool_http", `bmaptool -q copy --bmap "$BMAP" "$URL" "$DEV"`},
		{"curl_dd", `curl -sf "$URL" | dd of="$DEV" bs=4M iflag=fullblock conv=fsync status=none`},
	}
	times := map[string][]float64{}
	var rss int64
	for r := 0; r < *rounds; r++ {
		all := append(append([]tool{}, local...), remote...)
		if *only != "" {
			var keep []tool
			for _, t := range all {
				if strings.Contains(","+*only+",", ","+t.name+",") {
					keep = append(keep, t)
				}
			}
			all = keep
		}
		for i := range all {
			t := all[(i+r)%len(all)]
			if err := discard(dev, backing); err != nil {
				return err
			}
			d, maxrss, err := timeCmd(t.cmd, env)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if err := cmpDev(img, dev, size); err != nil {
				return fmt.Errorf("%s wrote a wrong image: %w", t.name, err)
			}
			if strings.HasPrefix(t.name, "loom") {
				rss = max(rss, maxrss)
			}
			times[t.name] = append(times[t.name], d)
		}
	}
	med := func(n string) float64 {
		s := append([]float64(nil), times[n]...)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	mb := float64(size) / 1e6
	fmt.Fprintf(out, "%-14s %8s %9s  (median of %d, %d MiB data in a %d GiB image, checked with cmp)\n", "tool", "seconds", "MB/s", *rounds, data>>20, *sizeGiB)
	for _, t := range append(append([]tool{}, local...), remote...) {
		if len(times[t.name]) == 0 {
			continue
		}
		fmt.Fprintf(out, "%-14s %8.2f %9.0f\n", t.name, med(t.name), mb/med(t.name))
	}

	if *straceDir != "" {
		if err := straceTools(out, *straceDir, local, env, dev, backing, img, size, data); err != nil {
			return err
		}
	}
	if *only != "" {
		return nil
	}
	// Dirty target: who leaves stale bytes in the holes?
	fmt.Fprintln(out, "onto a target pre-filled with random bytes:")
	for _, t := range []tool{local[0], local[2], local[3], local[4]} {
		if err := fillRandom(dev, size); err != nil {
			return err
		}
		if _, _, err := timeCmd(t.cmd, env); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		verdict := "identical to the image"
		if err := cmpDev(img, dev, size); err != nil {
			verdict = "DIFFERS: " + err.Error()
		}
		fmt.Fprintf(out, "  %-12s %s\n", t.name, verdict)
	}
	l := med("loom")
	fmt.Fprintf(out, "bench imaging: loom_mbps=%.0f vs_bmaptool=%.2f vs_dd=%.2f vs_dd_sparse=%.2f vs_qemu_img=%.2f rss_mb=%.1f loom_http_mbps=%.0f vs_bmaptool_http=%.2f vs_curl_dd=%.2f\n",
		mb/l, med("bmaptool")/l, med("dd")/l, med("dd_sparse")/l, med("qemu_img")/l, float64(rss)/1024,
		mb/med("loom_http"), med("bmaptool_http")/med("loom_http"), med("curl_dd")/med("loom_http"))
	return nil
}

// makeImage writes a sparse image with random data extents (64 KiB–16 MiB)
// covering about pct percent of it. It returns the data bytes.
func makeImage(path string, size int64, pct int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }() // after the Sync that the last line checks
	if err := f.Truncate(size); err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(7, 7))
	cc := rand.NewChaCha8([32]byte{7})
	buf := make([]byte, 16<<20)
	var data, off int64
	want := size * int64(pct) / 100
	for off < size && data < want {
		n := int64(64<<10) << rng.IntN(9) // 64 KiB .. 16 MiB
		n = min(n, size-off, want-data)
		_, _ = cc.Read(buf[:n]) // ChaCha8's Read never fails
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return 0, err
		}
		data += n
		gap := n * int64(100-pct) / int64(pct)
		off += n + (gap &^ 4095)
	}
	return data, f.Sync()
}

func timeCmd(script string, env []string) (float64, int64, error) {
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start).Seconds()
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, out)
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss // KiB; for bash -c with one command this is that command
	}
	return d, rss, nil
}

// straceTools runs loom (with its phases logged), bmaptool and qemu_img
// once each under strace -c -f and prints each one's system calls (count
// and time) per MiB of data.
func straceTools(out io.Writer, dir string, local []tool, env []string, dev, backing, img string, size, data int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	mib := float64(data) / (1 << 20)
	fmt.Fprintf(out, "system calls per MiB of data (strace -c -f, one run each; %s):\n", dir)
	for _, t := range local {
		if t.name != "loom" && t.name != "bmaptool" && t.name != "qemu_img" {
			continue
		}
		if err := discard(dev, backing); err != nil {
			return err
		}
		script := t.cmd
		if t.name == "loom" {
			script = strings.Replace(script, `"$AGENT" write-image`, `"$AGENT" -v write-image`, 1) + ` 2>"$STRACE_LOG"`
		}
		path := filepath.Join(dir, t.name+".strace")
		logPath := filepath.Join(dir, t.name+".log")
		cmd := exec.Command("strace", "-f", "-c", "-o", path, "bash", "-o", "pipefail", "-c", script)
		cmd.Env = append(append(os.Environ(), env...), "STRACE_LOG="+logPath)
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s under strace: %v: %s", t.name, err, o)
		}
		if err := cmpDev(img, dev, size); err != nil {
			return fmt.Errorf("%s under strace wrote a wrong image: %w", t.name, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// strace -c: % time, seconds, usecs/call, calls, errors, syscall
		var rows []string
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 5 || f[len(f)-1] == "syscall" || f[len(f)-1] == "total" || strings.HasPrefix(f[0], "-") {
				continue
			}
			var secs float64
			var calls int
			if _, err := fmt.Sscan(f[1], &secs); err != nil {
				continue
			}
			if _, err := fmt.Sscan(f[3], &calls); err != nil {
				continue
			}
			if len(rows) < 6 {
				rows = append(rows, fmt.Sprintf("%s %.1f (%.2f ms)", f[len(f)-1], float64(calls)/mib, 1000*secs/mib))
			}
		}
		fmt.Fprintf(out, "  %-10s %s\n", t.name, strings.Join(rows, ", "))
		if t.name == "loom" {
			if b, err := os.ReadFile(logPath); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "imaging: done") {
						fmt.Fprintf(out, "  %-10s phases: %s\n", "", l[strings.Index(l, "holes="):])
					}
				}
			}
		}
	}
	return nil
}

// discard empties the target so each run starts from a fresh sparse device.
func discard(dev, backing string) error {
	if o, err := exec.Command("blkdiscard", dev).CombinedOutput(); err != nil {
		return fmt.Errorf("blkdiscard: %v: %s", err, o)
	}
	return nil
}

func fillRandom(dev string, size int64) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	cc := rand.NewChaCha8([32]byte{9})
	buf := make([]byte, 16<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		_, _ = cc.Read(buf) // never fails
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
	}
	return f.Sync()
}

func cmpDev(img, dev string, size int64) error {
	o, err := exec.Command("cmp", "-n", fmt.Sprint(size), img, dev).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s", strings.TrimSpace(string(o)))
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
