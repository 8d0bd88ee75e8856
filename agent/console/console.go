// Package console writes the marker lines the agents print on the serial
// console: "LOOM-MARK step key=value …". The lab and the VM tests follow a
// server's progress by them (its phases, the guest's readiness), so their
// steps and keys are an interface: change them with the tests.
package console

import (
	"fmt"
	"io"
	"strings"
)

// Mark prints one marker line: step, then each key=value pair of kv.
func Mark(w io.Writer, step string, kv ...any) {
	var b strings.Builder
	b.WriteString("LOOM-MARK ")
	b.WriteString(step)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	b.WriteByte('\n')
	_, _ = io.WriteString(w, b.String()) // a console that cannot be written is no reason to stop
}
