package guestagent

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/loomfabric/loom/agent/channel"
	"github.com/loomfabric/loom/agent/console"
)

// A guest may be resumed from a state saved from another guest (a
// template booted once per host to the point below): the host agent
// saves it while this agent waits for its host in waitHost, and every
// guest resumed from it goes on from there. What must be its own it takes
// from its host's hello (fromHost): its name, the time, fresh entropy. The
// kernel reseeds its random state from the new VM generation ID too.

// hostPoll is how often waitHost looks for the host end.
const hostPoll = 2 * time.Millisecond

// waitHost returns once the host end of the channel port is connected.
// Until then a read would end at once (the virtio console's EOF for "no
// host"), so it polls the port's state without reading, and says so on the
// console the first time: a template is saved on that mark.
func (a *guestAgent) waitHost(ctx context.Context, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for marked := false; ; {
		var hup bool
		var perr error
		if err := rc.Control(func(fd uintptr) {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, perr = unix.Poll(p, 0)
			hup = p[0].Revents&unix.POLLHUP != 0
		}); err != nil {
			return err
		}
		if perr != nil && perr != unix.EINTR {
			return fmt.Errorf("polling the channel port: %w", perr)
		}
		if perr == nil && !hup {
			return nil
		}
		if !marked {
			console.Mark(a.console, "waiting-host")
			marked = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(hostPoll):
		}
	}
}

// fromHost takes what the host's hello says is this guest's own.
func (a *guestAgent) fromHost(h channel.Hello) {
	a.mu.Lock()
	renamed := h.Instance != "" && h.Instance != a.instance
	if renamed {
		a.instance = h.Instance
	}
	a.mu.Unlock()
	if renamed {
		console.Mark(a.console, "instance", "name", h.Instance)
	}
	if len(h.Entropy) > 0 {
		if err := addEntropy(h.Entropy); err != nil {
			a.log.Warn("the host's entropy not added", "err", err)
		}
	}
	if h.Time != 0 {
		host := time.Unix(0, h.Time)
		if off := time.Since(host); off > 20*time.Millisecond || off < -20*time.Millisecond {
			tv := unix.NsecToTimeval(host.UnixNano())
			if err := unix.Settimeofday(&tv); err != nil {
				a.log.Warn("clock not stepped to the host's", "err", err)
			} else {
				console.Mark(a.console, "clock", "stepped", (-off).Round(time.Millisecond))
			}
		}
	}
}

// addEntropy mixes b into the kernel's pool, credited, and reseeds the
// kernel's generator from it at once (RNDADDENTROPY, RNDRESEEDCRNG: both
// need CAP_SYS_ADMIN, which the guest's init has).
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // ioctls only
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+(len(b)+3)&^3)
	binary.NativeEndian.PutUint32(info[0:], uint32(len(b)*8))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(b)))
	copy(info[8:], b)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", e)
	}
	return nil
}
