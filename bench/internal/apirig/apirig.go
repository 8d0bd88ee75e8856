// Package apirig starts a loomd with only its API, on loopback, for the
// benchmarks that talk to its image server.
package apirig

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/pki"
)

// Loomd is a running loomd; Stop ends it.
type Loomd struct {
	Client *client.Client
	Addr   string // host:port of its API
	Data   string // its data directory
	cmd    *exec.Cmd
}

// Start runs bin (with extra flags args) with its data in dir/loomd and
// its log in dir/loomd.log, and waits until its API answers.
func Start(ctx context.Context, bin, dir string, args ...string) (*Loomd, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	l := &Loomd{Addr: addr, Data: filepath.Join(dir, "loomd")}
	l.cmd = exec.Command(bin, append([]string{"--data-dir", l.Data, "--api", addr}, args...)...)
	log, err := os.Create(filepath.Join(dir, "loomd.log"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = log.Close() }() // loomd writes through its own descriptor
	l.cmd.Stdout, l.cmd.Stderr = log, log
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := l.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		b, _ := os.ReadFile(filepath.Join(l.Data, "operator.token"))
		if tok := strings.TrimSpace(string(b)); tok != "" {
			ca, _ := os.ReadFile(filepath.Join(l.Data, "ca.pem")) // written before the token is read back
			t, err := pki.ClientTLS(ca, nil)
			if err != nil {
				continue // not yet written
			}
			l.Client = &client.Client{BaseURL: "https://" + addr, Token: tok, TLS: t}
			if _, err := l.Client.Images(ctx); err == nil {
				return l, nil
			}
		}
	}
	l.Stop()
	return nil, fmt.Errorf("loomd API not answering after 30s (log: %s)", filepath.Join(dir, "loomd.log"))
}

// PID is loomd's process ID.
func (l *Loomd) PID() int { return l.cmd.Process.Pid }

// EnrollToken is the token agents register with.
func (l *Loomd) EnrollToken() (string, error) {
	b, err := os.ReadFile(filepath.Join(l.Data, "enroll.token"))
	return strings.TrimSpace(string(b)), err
}

// LogTail is the end of loomd's log (its last n lines), for an error.
func (l *Loomd) LogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(l.Data), "loomd.log")) // missing: nothing to show
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Stop ends loomd and waits for it.
func (l *Loomd) Stop() {
	_ = l.cmd.Process.Signal(syscall.SIGTERM) // gone already is fine
	_ = l.cmd.Wait()
}
