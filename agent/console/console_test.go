package console

import (
	"bytes"
	"testing"
)

func TestMark(t *testing.T) {
	var b bytes.Buffer
	Mark(&b, "registered", "node", "n-1", "ip", "10.0.0.5")
	Mark(&b, "shutdown")
	Mark(&b, "odd", "key") // a key without a value is left out
	want := "LOOM-MARK registered node=n-1 ip=10.0.0.5\nLOOM-MARK shutdown\nLOOM-MARK odd\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
