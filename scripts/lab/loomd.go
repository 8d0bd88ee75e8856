package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
)

// Loomd describes a loomd to run inside a lab namespace.
type Loomd struct {
	// Bin is the loomd binary.
	Bin string
	// DataDir for the store and tokens; Socket is its unix API socket.
	DataDir, Socket string
	// BootDir holds the maintenance kernel and initramfs.
	BootDir string
	// Log receives loomd's output.
	Log string
	// Args are extra flags.
	Args []string
	// Detach runs loomd in a session of its own that outlives the caller.
	Detach bool
	// Env adds environment variables (e.g. LOOM_FAULT_CUT_BLOBS=1).
	Env []string
}

// StartLoomd runs loomd in the namespace, serving netboot on the bridge,
// and waits until its API answers on the socket. The process is reaped in
// the background: stop it with cmd.Process.Signal, never cmd.Wait.
func (n *Net) StartLoomd(ctx context.Context, l Loomd) (*exec.Cmd, *client.Client, error) {
	args := append([]string{
		"--data-dir", l.DataDir, "--api", ":8080", "--api-unix", l.Socket,
		"--netboot-interface", n.Bridge, "--boot-dir", l.BootDir,
	}, l.Args...)
	cmd := n.Command(ctx, l.Bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if l.Detach {
		cmd = n.Command(context.Background(), l.Bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if len(l.Env) > 0 {
		cmd.Env = append(os.Environ(), l.Env...)
	}
	out, err := os.Create(l.Log)
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		_ = out.Close() // the start error is the one to report
		return nil, nil, fmt.Errorf("starting loomd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); _ = out.Close() }() // loomd wrote through its own descriptor
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("loomd exited at start (%v); its log:\n%s", err, Tail(l.Log, 20))
		case <-time.After(200 * time.Millisecond):
		}
		tok, err := os.ReadFile(filepath.Join(l.DataDir, "operator.token"))
		if err == nil {
			c := &client.Client{BaseURL: "unix://" + l.Socket, Token: strings.TrimSpace(string(tok))}
			if _, err := c.Nodes(ctx); err == nil {
				return cmd, c, nil
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill() // if it ended meanwhile, so much the better
			return nil, nil, fmt.Errorf("loomd API not answering after 60s; its log:\n%s", Tail(l.Log, 20))
		}
	}
}

// WaitNode polls until a node with mac satisfies ok, or the deadline passes.
func WaitNode(ctx context.Context, c *client.Client, mac string, d time.Duration, ok func(api.Node) bool) (api.Node, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last api.Node
	for {
		nodes, err := c.Nodes(ctx)
		if err == nil {
			for _, n := range nodes {
				if n.MAC == mac {
					last = n
					if ok(n) {
						return n, nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("node %s: condition not met within %v (last phase %q)", mac, d, last.Phase)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Tail returns the last n lines of a file.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return TailString(string(b), n)
}

// TailString returns the last n lines of s.
func TailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// SetUpHostProfile uploads the host image (unless an image of that name
// exists) and creates profile name using it, adding kernelArgs to the
// host kernel's command line.
func SetUpHostProfile(ctx context.Context, c *client.Client, name, imagePath string, kernelArgs ...string) error {
	if err := upload(ctx, c, name, imagePath); err != nil {
		return err
	}
	_, err := c.PutProfile(ctx, api.Profile{Name: name, Image: name, Disk: "first:1GiB", KernelArgs: strings.Join(kernelArgs, " ")})
	return err
}

// WatchPhases polls a node until ok(node) and returns the phases it went
// through, in order (each once).
func WatchPhases(ctx context.Context, c *client.Client, mac string, d time.Duration, ok func(api.Node) bool) ([]api.Phase, api.Node, error) {
	var seen []api.Phase
	n, err := WaitNode(ctx, c, mac, d, func(n api.Node) bool {
		if len(seen) == 0 || seen[len(seen)-1] != n.Phase {
			seen = append(seen, n.Phase)
		}
		return ok(n)
	})
	return seen, n, err
}
