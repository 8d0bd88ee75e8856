package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// table writes rows under a header, columns aligned.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ReplaceAll(header, " | ", "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// fields writes "Label:  value" lines, values aligned; an empty label
// continues the field above.
type fields struct{ tw *tabwriter.Writer }

func newFields(w io.Writer) fields { return fields{tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)} }

func (f fields) add(label, format string, a ...any) {
	if label != "" {
		label += ":"
	}
	fmt.Fprintf(f.tw, "%s\t%s\n", label, fmt.Sprintf(format, a...))
}

func (f fields) flush() error { return f.tw.Flush() }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesHuman(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

func phaseText(n api.Node) string {
	if n.Phase == api.PhaseImaging && n.Progress != nil && n.Progress.Total > 0 {
		return fmt.Sprintf("Imaging %d%%", n.Progress.Bytes*100/n.Progress.Total)
	}
	return string(n.Phase)
}

func progressText(p *api.Progress) string {
	s := fmt.Sprintf("%s of %s", bytesHuman(p.Bytes), bytesHuman(p.Total))
	if p.BytesPerS > 0 {
		s += fmt.Sprintf(", %s/s, ETA %s", bytesHuman(uint64(p.BytesPerS)), (time.Duration(p.ETASeconds) * time.Second).String())
	}
	return s
}

func phaseCounts(m map[api.Phase]int) string {
	var parts []string
	for p, n := range m {
		parts = append(parts, fmt.Sprintf("%s %d", p, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
