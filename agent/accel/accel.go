// Package accel decides how QEMU runs guests on this machine: under KVM
// where KVM really runs a guest, under TCG otherwise, and says why. It is
// the one place that decision is made, for the host agent's guests, the
// lab's servers, the benchmarks and the VM tests.
//
// Opening /dev/kvm proves nothing. On nested hypervisors, cloud VMs and CI
// runners it often opens, and then QEMU aborts at once with -cpu host
// ("failed to set MSR 0x10a to 0x69"), or, with the offending feature
// removed, the guest kernel hangs after its real-mode setup ("Probing
// EDD"). A few bytes of real-mode code run fine on such a machine (tried:
// they do), so the probe boots the very kernel Loom will run, without an
// initramfs, and requires it to reach its root-mount panic (with panic=-1
// and -no-reboot QEMU then exits 0): about a second under a working KVM.
// The kernel prints from its first instructions (earlyprintk), so a model
// fails when the console stays silent for 10 s (30 s before its first
// line, which comes after the firmware), and a slow but working KVM
// (nested under an emulated CPU, where a boot takes a minute and still
// beats TCG by far) passes as long as the kernel keeps printing. CPU models are tried in order (host, then host without
// arch-capabilities); the first that boots wins; when none does, the
// verdict is TCG (-cpu max) with the reason each model failed.
//
// The verdict is cached in CacheDir/accel.json keyed by QEMU's version,
// the host kernel, the probe kernel's version and the CPU models tried, so
// the probe costs seconds once per machine, not per guest. Probes by
// several processes at once (parallel test packages) are serialised by a
// lock on CacheDir/accel.lock.
package accel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// Mode is what the operator asked for.
type Mode string

// The modes: Auto probes; KVM insists on KVM (an error when it cannot run
// a guest); TCG never tries KVM.
const (
	Auto Mode = "auto"
	KVM  Mode = "kvm"
	TCG  Mode = "tcg"
)

// ParseMode reads "auto", "kvm" or "tcg"; "" is Auto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return Auto, nil
	case Auto, KVM, TCG:
		return m, nil
	}
	return "", fmt.Errorf("accelerator %q: want auto, kvm or tcg", s)
}

// ErrNoKVM is returned when Mode is KVM and KVM cannot run a guest here.
var ErrNoKVM = errors.New("kvm cannot run a guest here")

// DefaultCPUs are the CPU models tried under KVM, in order.
var DefaultCPUs = []string{"host", "host,-arch-capabilities"}

// Config says what to decide for.
type Config struct {
	// Mode is the operator's choice. Default Auto.
	Mode Mode
	// QEMU is the binary. Default "qemu-system-x86_64".
	QEMU string
	// Kernel is the kernel the probe boots (the one guests or servers
	// will run). Required unless Mode is TCG.
	Kernel string
	// CacheDir holds accel.json and accel.lock. Default: no cache.
	CacheDir string
	// Timeout is how long the probe kernel's console may stay silent
	// before the CPU model is judged not to run. Default 10s.
	Timeout time.Duration
	// FirstOutput is how long the probe waits for the first console line
	// (firmware runs before it: slow where KVM is nested under an emulated
	// CPU). Default 30s.
	FirstOutput time.Duration
	// MaxTime bounds one CPU model's boot to the kernel's root-mount
	// panic, however steadily it prints. Default 3m.
	MaxTime time.Duration
	// CPUs are the models tried under KVM. Default DefaultCPUs.
	CPUs []string
	// Device is the KVM device. Default "/dev/kvm".
	Device string
	// Log receives the one line with the decision. Default: discard.
	Log *slog.Logger
}

func (c Config) qemu() string   { return cmpOr(c.QEMU, "qemu-system-x86_64") }
func (c Config) device() string { return cmpOr(c.Device, "/dev/kvm") }
func (c Config) cpus() []string { return cmpOrSlice(c.CPUs, DefaultCPUs) }
func (c Config) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 10 * time.Second
	}
	return c.Timeout
}

func (c Config) firstOutput() time.Duration {
	if c.FirstOutput <= 0 {
		return 30 * time.Second
	}
	return c.FirstOutput
}

func (c Config) maxTime() time.Duration {
	if c.MaxTime <= 0 {
		return 3 * time.Minute
	}
	return c.MaxTime
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func cmpOrSlice(v, def []string) []string {
	if len(v) == 0 {
		return def
	}
	return v
}

// TCGCPU is the CPU model under TCG (it has RDRAND, which Go's crypto/rand
// wants early in boot).
const TCGCPU = "max"

// Args returns QEMU's "-accel … -cpu …" for a verdict.
func Args(v api.Accel) []string {
	if v.Accel == "kvm" {
		return []string{"-accel", "kvm", "-cpu", v.CPU}
	}
	return []string{"-accel", "tcg", "-cpu", cmpOr(v.CPU, TCGCPU)}
}

// Decide makes the decision (from the cache when it holds one for this
// machine) and logs it in one line.
func Decide(ctx context.Context, c Config) (api.Accel, error) {
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v, cached, err := decide(ctx, c)
	if err != nil {
		log.Error("accelerator", "mode", cmpOr(string(c.Mode), string(Auto)), "err", err)
		return v, err
	}
	log.Info("accelerator", "accel", v.Accel, "cpu", v.CPU, "reason", v.Reason, "cached", cached)
	return v, nil
}

func decide(ctx context.Context, c Config) (api.Accel, bool, error) {
	mode := c.Mode
	if mode == "" {
		mode = Auto
	}
	if mode == TCG {
		return api.Accel{Accel: "tcg", CPU: TCGCPU, Reason: "tcg asked for"}, false, nil
	}
	tcg := func(why string) (api.Accel, bool, error) {
		v := api.Accel{Accel: "tcg", CPU: TCGCPU, Reason: why}
		if mode == KVM {
			return v, false, fmt.Errorf("%w: %s", ErrNoKVM, why)
		}
		return v, false, nil
	}
	f, err := os.OpenFile(c.device(), os.O_RDWR, 0)
	if err != nil {
		return tcg("no usable KVM device: " + err.Error())
	}
	_ = f.Close() // opened only to see that it opens
	if c.Kernel == "" {
		return api.Accel{}, false, errors.New("accel: the probe needs a kernel (Config.Kernel)")
	}
	key, err := c.key()
	if err != nil {
		return api.Accel{}, false, fmt.Errorf("accel: %w", err)
	}
	var unlock func()
	if c.CacheDir != "" {
		if unlock, err = lock(ctx, filepath.Join(c.CacheDir, "accel.lock")); err != nil {
			return api.Accel{}, false, fmt.Errorf("accel: %w", err)
		}
		defer unlock()
		if v, ok := readCache(c.CacheDir, key); ok {
			if v.Accel == "tcg" && mode == KVM {
				return v, true, fmt.Errorf("%w: %s", ErrNoKVM, v.Reason)
			}
			return v, true, nil
		}
	}
	v := c.probeAll(ctx)
	if ctx.Err() != nil {
		return api.Accel{}, false, ctx.Err() // an interrupted probe proves nothing: never cached
	}
	if c.CacheDir != "" {
		if err := writeCache(c.CacheDir, key, v); err != nil {
			return api.Accel{}, false, fmt.Errorf("accel: caching the verdict: %w", err)
		}
	}
	if v.Accel == "tcg" && mode == KVM {
		return v, false, fmt.Errorf("%w: %s", ErrNoKVM, v.Reason)
	}
	return v, false, nil
}

// probeAll tries each CPU model under KVM; the first that boots wins.
func (c Config) probeAll(ctx context.Context) api.Accel {
	var why []string
	for _, cpu := range c.cpus() {
		t0 := time.Now()
		err := c.probe(ctx, cpu)
		if err == nil {
			return api.Accel{Accel: "kvm", CPU: cpu, Reason: fmt.Sprintf("kvm probe booted a kernel with -cpu %s in %.1fs", cpu, time.Since(t0).Seconds())}
		}
		if ctx.Err() != nil {
			break
		}
		why = append(why, fmt.Sprintf("-cpu %s: %v", cpu, err))
	}
	return api.Accel{Accel: "tcg", CPU: TCGCPU, Reason: "kvm probe failed: " + strings.Join(why, "; ")}
}

// probe boots Kernel under KVM with cpu and waits for its root-mount
// panic (QEMU exits 0 through -no-reboot). The kernel prints from its
// first instructions (earlyprintk); it fails when the console stays silent
// for Timeout (FirstOutput before the first line), or the boot takes longer
// than MaxTime. So a slow KVM (nested
// under an emulated CPU, where a boot takes a minute yet still beats TCG)
// passes, and a KVM whose guest hangs fails within seconds.
func (c Config) probe(ctx context.Context, cpu string) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.maxTime(), errTooSlow)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, c.qemu(),
		"-machine", "q35", "-accel", "kvm", "-cpu", cpu, "-m", "128", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
		"-no-reboot", "-kernel", c.Kernel,
		"-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
		"-serial", "stdio")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	var (
		mu      sync.Mutex
		console []byte
		lastOut = time.Now()
		printed bool
		silent  bool
	)
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := stdout.Read(buf)
			mu.Lock()
			console = append(console, buf[:n]...)
			if len(console) > 64<<10 {
				console = console[len(console)-32<<10:]
			}
			if n > 0 {
				lastOut, printed = time.Now(), true
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	watch := time.NewTicker(c.timeout() / 10)
	defer watch.Stop()
wait:
	for {
		select {
		case <-read:
			break wait
		case <-ctx.Done():
			break wait
		case <-watch.C:
			mu.Lock()
			limit := c.timeout()
			if !printed {
				limit = c.firstOutput()
			}
			idle := time.Since(lastOut) > limit
			mu.Unlock()
			if idle {
				silent = true
				_ = cmd.Process.Kill() // if it ended meanwhile, Wait below says so
				break wait
			}
		}
	}
	err = cmd.Wait()
	mu.Lock()
	out := string(console)
	mu.Unlock()
	switch {
	case silent || context.Cause(ctx) == errTooSlow:
		last := lastLine(out)
		switch {
		case !silent:
			return fmt.Errorf("the kernel did not finish booting in %v (last: %q)", c.maxTime(), last)
		case last == "":
			return fmt.Errorf("no console output in %v", c.firstOutput())
		}
		return fmt.Errorf("the kernel stopped after %q (nothing more in %v)", last, c.timeout())
	case err != nil:
		if msg := lastLine(stderr.String()); msg != "" {
			return fmt.Errorf("qemu: %v: %s", err, msg)
		}
		return fmt.Errorf("qemu: %w", err)
	case !strings.Contains(out, "Kernel panic"):
		return fmt.Errorf("QEMU exited before the kernel ran to its root-mount panic (console: %q)", lastLine(out))
	}
	return nil
}

var errTooSlow = errors.New("probe took too long")

// lastLine is the last non-empty line of s, trimmed and bounded.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			if len(l) > 200 {
				l = l[:200] + "…"
			}
			return l
		}
	}
	return ""
}
