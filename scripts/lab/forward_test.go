package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestForward: a connection to the forwarder on the host's loopback
// reaches a server listening only on the loopback of another namespace,
// both ways.
func TestForward(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	ns := "loom-fwd-" + Suffix()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	// A server inside: listen from a thread moved into ns.
	var ln net.Listener
	var lerr error
	err := InNS(ns, func() { ln, lerr = net.Listen("tcp", "127.0.0.1:0") })
	if err == nil {
		err = lerr
	}
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "inside got %s", line)
			}()
		}
	}()
	// The same port on the host's loopback is not the server.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Logf("note: %s also answers on the host (another program)", ln.Addr())
	}

	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Forward(ctx, addr, ns, ln.Addr().String()) }()
	var c net.Conn
	for i := 0; ; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if i > 50 {
			t.Fatalf("the forwarder never listened: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(c, "hello\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || reply != "inside got hello\n" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := Forward(context.Background(), "127.0.0.1:0", "loom-no-such-ns", "127.0.0.1:1"); err == nil {
		t.Fatal("a missing namespace was taken")
	}
}
