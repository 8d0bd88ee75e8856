// Command channel measures HTTP through Loom's guest channel against the
// same guest reached over a virtio-net NIC, in the same run.
//
// One guest (the product's supervisor, guest OS and sample web role) is
// started with, for this comparison only, a virtio-net NIC on QEMU's user
// network with a host port forwarded to the role (hostfwd). The role is
// then reached two ways from the host: through the host agent's ingress
// port, which carries each TCP connection as a stream over the
// virtio-serial channel (yamux), and through the NIC. Throughput: GET
// /bytes of -mb MiB, median of -rounds; latency: p50 of -requests GET
// /healthz on a kept-alive connection.
//
// Last line: bench channel: mbps=… vs_nic=… p50_ms=… (vs_nic = channel
// throughput / NIC throughput; the channel's default 64 MiB/s cap applies).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/loomfabric/loom/bench/internal/guestrig"
	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/lab"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench channel:", err)
		os.Exit(1)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer lab.Cleanup(ln.Close)
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("channel", flag.ContinueOnError)
	guestDir := fs.String("guest", "build/guest", "guest OS")
	pkg := fs.String("package", "build/roles/web.tar", "web role package")
	mb := fs.Int("mb", 32, "MiB per throughput run")
	rounds := fs.Int("rounds", 3, "throughput runs per path (median taken)")
	requests := fs.Int("requests", 200, "requests for the latency")
	if err := fs.Parse(args); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	nicArgs := []string{"-netdev", fmt.Sprintf("user,id=n0,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:%d-:8080", port), "-device", "virtio-net-pci,netdev=n0"}
	r, err := guestrig.New(ctx, *guestDir, *pkg, nicArgs, "loom.nic-ip=10.0.2.15/24", true)
	if err != nil {
		return err
	}
	defer r.Close()
	start := time.Now()
	r.Sup.Apply([]api.GoalVM{r.Goal("bench-web", 512)})
	st, err := r.Wait("bench-web", 5*time.Minute, func(s api.VMStatus, _ bool) bool { return s.State == api.VMStateRunning && s.Endpoint != "" })
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "guest running in %.1fs; channel ingress %s, NIC (user net, hostfwd) 127.0.0.1:%d\n", time.Since(start).Seconds(), st.Endpoint, port)
	paths := []struct{ name, base string }{
		{"channel", "http://" + st.Endpoint},
		{"nic", fmt.Sprintf("http://127.0.0.1:%d", port)},
	}
	// Wait until the NIC path answers too.
	for i := 0; ; i++ {
		resp, err := http.Get(paths[1].base + "/healthz")
		if err == nil {
			_ = resp.Body.Close() // answered: that is all this asks
			break
		}
		if i > 100 {
			return fmt.Errorf("the guest's NIC path never answered: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	size := int64(*mb) << 20
	mbps := map[string]float64{}
	p50 := map[string]float64{}
	for _, p := range paths {
		var tp []float64
		for range *rounds {
			t0 := time.Now()
			resp, err := http.Get(fmt.Sprintf("%s/bytes?n=%d", p.base, size))
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close() // read to the end: checked just below
			if err != nil || n != size {
				return fmt.Errorf("%s: %d of %d bytes: %v", p.name, n, size, err)
			}
			tp = append(tp, float64(size)/1e6/time.Since(t0).Seconds())
		}
		mbps[p.name] = guestrig.Median(tp)
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		var lat []float64
		for range *requests {
			t0 := time.Now()
			resp, err := c.Get(p.base + "/healthz")
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			_, err = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			lat = append(lat, time.Since(t0).Seconds()*1000)
		}
		sort.Float64s(lat)
		p50[p.name] = lat[len(lat)/2]
		fmt.Fprintf(out, "%-8s %7.1f MB/s (GET %d MiB, median of %d)   p50 %.2f ms  p99 %.2f ms (%d requests, kept alive)\n",
			p.name, mbps[p.name], *mb, *rounds, p50[p.name], lat[len(lat)*99/100], *requests)
	}
	fmt.Fprintf(out, "bench channel: mbps=%.1f vs_nic=%.2f p50_ms=%.2f nic_mbps=%.1f nic_p50_ms=%.2f accel=%s\n",
		mbps["channel"], mbps["channel"]/mbps["nic"], p50["channel"], mbps["nic"], p50["nic"], r.Accel.Accel)
	return nil
}
