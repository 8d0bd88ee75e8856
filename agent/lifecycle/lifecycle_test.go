package lifecycle

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
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
