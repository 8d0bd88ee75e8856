package lifecycle

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/u-root/mkuimage/cpio"

	"github.com/loomfabric/loom/agent/seed"
)

func TestRunStepsAndConfig(t *testing.T) {
	var out bytes.Buffer
	cfg := Config{Cmdline: "console=ttyS0 quiet", Console: &out}
	a := New(cfg)
	if cfg.Root != "" || cfg.MaxBackoff != 0 || cfg.Mode != "" {
		t.Errorf("New filled the caller's config: %+v", cfg)
	}
	if a.cfg.Mode != "maintenance" || a.cfg.Root != "/" {
		t.Errorf("defaults not applied: %+v", a.cfg)
	}
	err := a.Run(context.Background(), slog.New(slog.DiscardHandler))
	if err == nil || !strings.HasPrefix(err.Error(), "cmdline: ") || !strings.Contains(err.Error(), "loom.fabric") {
		t.Errorf("a command line without loom.fabric: %v, want an error from the cmdline step naming loom.fabric", err)
	}
	var names []string
	for _, s := range a.steps() {
		names = append(names, s.name)
	}
	if got := strings.Join(names, ","); got != "cmdline,network,inventory,guests,serve" {
		t.Errorf("steps %s", got)
	}
}

// TestSeed: the CA and the token come from the seed under Root; a clock
// behind the seed's not-before is moved there; without a token, or with
// an https fabric and no CA, the agent says what is missing.
func TestSeed(t *testing.T) {
	write := func(sd seed.Seed) string {
		root := t.TempDir()
		var b bytes.Buffer
		if err := sd.Append(&b, strings.NewReader("")); err != nil {
			t.Fatal(err)
		}
		if err := cpio.ForEachRecord(cpio.Newc.Reader(bytes.NewReader(b.Bytes())), func(r cpio.Record) error {
			return cpio.CreateFileInRoot(r, root, false)
		}); err != nil {
			t.Fatal(err)
		}
		return root
	}
	var set []time.Time
	setClock = func(t time.Time) error { set = append(set, t); return nil }
	defer func() { setClock = setSystemClock }()

	ca := []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
	ahead := time.Now().Add(time.Hour).Truncate(time.Second)
	var out bytes.Buffer
	a := New(Config{Cmdline: "loom.fabric=https://10.0.0.1:8080", Root: write(seed.Seed{CA: ca, Token: "tok", NotBefore: ahead}), Console: &out})
	var b boot
	if err := a.readCmdline(context.Background(), &b, nil); err != nil {
		t.Fatal(err)
	}
	if b.cl.Token != "tok" || string(b.ca) != string(ca) || !b.notBefore.Equal(ahead) {
		t.Errorf("from the seed: token %q, CA %q, not-before %v", b.cl.Token, b.ca, b.notBefore)
	}
	if len(set) != 1 || !set[0].Equal(ahead) || !strings.Contains(out.String(), "LOOM-MARK clock") {
		t.Errorf("clock set to %v (console %q), want once to %v", set, out.String(), ahead)
	}
	// A clock already past it is left alone.
	set = nil
	a = New(Config{Cmdline: "loom.fabric=https://10.0.0.1:8080", Root: write(seed.Seed{CA: ca, Token: "tok", NotBefore: time.Now().Add(-time.Hour)}), Console: &out})
	if err := a.readCmdline(context.Background(), &boot{}, nil); err != nil || len(set) != 0 {
		t.Errorf("clock ahead of the seed: %v, set %v", err, set)
	}
	// Nothing there.
	a = New(Config{Cmdline: "loom.fabric=https://10.0.0.1:8080", Root: t.TempDir(), Console: &out})
	if err := a.readCmdline(context.Background(), &boot{}, nil); err == nil || !strings.Contains(err.Error(), seed.TokenFile) {
		t.Errorf("no seed: %v, want an error naming %s", err, seed.TokenFile)
	}
	a = New(Config{Cmdline: "loom.fabric=https://10.0.0.1:8080 loom.token=t", Root: t.TempDir(), Console: &out})
	if err := a.readCmdline(context.Background(), &boot{}, nil); err == nil || !strings.Contains(err.Error(), seed.CAFile) {
		t.Errorf("https without a CA: %v, want an error naming %s", err, seed.CAFile)
	}
}
