package guestagent

import (
	"strings"
	"testing"
)

func TestLineWriter(t *testing.T) {
	var lines []string
	w := &lineWriter{emit: func(l string) { lines = append(lines, l) }}
	for _, p := range []string{"hel", "lo\nwor", "ld\n\npartial"} {
		if n, err := w.Write([]byte(p)); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}
	if got := strings.Join(lines, "|"); got != "hello|world|" {
		t.Errorf("lines %q, want hello|world| (partial held back)", got)
	}
	// A line without end is cut at 4 KiB rather than held without bound.
	lines = nil
	if _, err := w.Write([]byte(strings.Repeat("x", 5000))); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || len(lines[0]) != len("partial")+5000 {
		t.Errorf("an endless line: %d lines, want 1 of %d bytes", len(lines), len("partial")+5000)
	}
}
