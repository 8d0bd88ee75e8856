package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/cmdline"
)

// channelPort finds the device of the named virtio-serial port. Without
// udev there is no /dev/virtio-ports/NAME: the name is in sysfs.
func channelPort(name string) (string, error) {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(n)), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %s (is virtio_console loaded?)", name)
}

// RunGuest is loom-agent's guest mode: the guest's uinit. It connects to
// the host over the channel, says hello, reports the network interfaces it
// sees (a guest has none but lo) and its health, and keeps reporting until
// the session ends; then it connects again. Markers: channel, guest-ready.
func (c *Config) RunGuest(ctx context.Context, log *slog.Logger) error {
	if c.Console == nil {
		c.Console = os.Stderr
	}
	line := c.Cmdline
	if line == "" {
		b, _ := os.ReadFile("/proc/cmdline")
		line = string(b)
	}
	instance := ""
	for _, kv := range cmdline.Split(line) {
		if kv[0] == "loom.instance" {
			instance = kv[1]
		}
	}
	for b := (backoff{max: 5 * time.Second}); ; {
		err := c.guestSession(ctx, instance, log)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("channel session ended; connecting again", "err", err)
		b.wait(ctx)
	}
}

func (c *Config) guestSession(ctx context.Context, instance string, log *slog.Logger) error {
	port, err := channelPort("org.loom.channel.0")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	g, err := channel.Dial(f, channel.Hello{Instance: instance, Agent: Version})
	if err != nil {
		return err
	}
	defer g.Close()
	Mark(c.Console, "channel", "port", port, "host-instance", g.Host.Instance)
	s, err := g.Open("control")
	if err != nil {
		return err
	}
	defer s.Close()
	var names []string
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	if err := channel.WriteFrame(s, channel.Message{Type: "interfaces", Interfaces: names}); err != nil {
		return err
	}
	if err := channel.WriteFrame(s, channel.Message{Type: "health", State: "ready"}); err != nil {
		return err
	}
	Mark(c.Console, "guest-ready", "instance", instance, "interfaces", strings.Join(names, ","))
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-g.Done():
			return errors.New("the host closed the channel")
		case <-t.C:
			if err := channel.WriteFrame(s, channel.Message{Type: "health", State: "ready"}); err != nil {
				return err
			}
		}
	}
}
