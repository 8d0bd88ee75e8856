package lab

import (
	"fmt"
	"os"
	"os/exec"
)

// Kill ends cmd at once and reaps it. Errors mean it had ended already,
// and the exit status of a killed program says nothing.
func Kill(cmd *exec.Cmd) {
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Cleanup runs a deferred tear-down (a namespace's Close, …) and says on
// standard error if it failed: something is left behind to look at.
func Cleanup(f func() error) {
	if err := f(); err != nil {
		fmt.Fprintln(os.Stderr, "cleanup:", err)
	}
}

// RemoveAll removes what a run made, saying so if it cannot.
func RemoveAll(path string) { Cleanup(func() error { return os.RemoveAll(path) }) }
