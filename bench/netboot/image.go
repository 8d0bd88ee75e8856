package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/loomfabric/loom/agent/imaging"
	"github.com/loomfabric/loom/bench/internal/apirig"
	"github.com/loomfabric/loom/scripts/lab"
)

const nginxConf = `daemon off;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp;
  uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
  server { listen %[2]s; root %[3]s; }
}
`

// imageServing times n concurrent pulls of one raw image of mib MiB from
// loomd (the agent's verified writer) and from nginx (curl), rounds times
// each, interleaved; it returns the median wall times.
func imageServing(ctx context.Context, tmp, loomBin string, n, mib, rounds int, out io.Writer) (float64, float64, error) {
	www := filepath.Join(tmp, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return 0, 0, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // nginx's workers (www-data) read the file
		return 0, 0, err
	}
	img := filepath.Join(www, "image.raw")
	f, err := os.Create(img)
	if err != nil {
		return 0, 0, err
	}
	_, err = io.CopyN(f, rand.Reader, int64(mib)<<20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, 0, err
	}

	ld, err := apirig.Start(ctx, loomBin, tmp)
	if err != nil {
		return 0, 0, err
	}
	defer ld.Stop()
	if f, err = os.Open(img); err != nil {
		return 0, 0, err
	}
	_, err = ld.Client.AddImage(ctx, "rack", f, nil)
	_ = f.Close() // read only
	if err != nil {
		return 0, 0, fmt.Errorf("uploading to loomd: %w", err)
	}
	man, err := ld.Client.Image(ctx, "rack")
	if err != nil {
		return 0, 0, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	ngAddr := ln.Addr().String()
	ln.Close()
	ngDir := filepath.Join(tmp, "nginx")
	if err := os.MkdirAll(filepath.Join(ngDir, "tmp"), 0o755); err != nil {
		return 0, 0, err
	}
	conf := filepath.Join(ngDir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, ngDir, ngAddr, www)), 0o644); err != nil {
		return 0, 0, err
	}
	ng := exec.Command("nginx", "-c", conf, "-p", ngDir)
	ngLog, err := os.Create(filepath.Join(ngDir, "out.log"))
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = ngLog.Close() }() // nginx writes through its own descriptor
	ng.Stdout, ng.Stderr = ngLog, ngLog
	ng.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ng.Start(); err != nil {
		return 0, 0, fmt.Errorf("nginx: %w", err)
	}
	defer func() { _ = ng.Process.Signal(syscall.SIGQUIT); _ = ng.Wait() }() // graceful stop; how it ended says nothing
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", ngAddr); err == nil {
			c.Close()
			break
		}
		if i > 50 {
			b, _ := os.ReadFile(filepath.Join(ngDir, "error.log"))
			return 0, 0, fmt.Errorf("nginx not listening: %s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Targets on tmpfs where there is one, so the disk under /tmp does not
	// decide the race.
	base := "/dev/shm"
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		base = tmp
	}
	targets, err := os.MkdirTemp(base, "loom-bench-pulls-")
	if err != nil {
		return 0, 0, err
	}
	defer lab.RemoveAll(targets)
	clean := func() {
		ents, _ := os.ReadDir(targets)
		for _, e := range ents {
			lab.RemoveAll(filepath.Join(targets, e.Name()))
		}
	}

	loom := func() (float64, error) {
		defer clean()
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := time.Now()
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t, err := os.OpenFile(filepath.Join(targets, fmt.Sprintf("loom-%d", i)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
				if err != nil {
					errs[i] = err
					return
				}
				defer func() { _ = t.Close() }() // the writer syncs what it wrote
				if err := t.Truncate(int64(man.Size)); err != nil {
					errs[i] = err
					return
				}
				w := &imaging.Writer{Manifest: man, Target: t,
					Source: &imaging.HTTPSource{URL: ld.Client.BaseURL + "/v1/images/rack/blob", Token: ld.Client.Token, TLS: ld.Client.TLS}}
				errs[i] = w.Write(ctx)
			}()
		}
		wg.Wait()
		return time.Since(start).Seconds(), errors.Join(errs...)
	}
	nginx := func() (float64, error) {
		defer clean()
		cmds := make([]*exec.Cmd, n)
		start := time.Now()
		for i := range cmds {
			cmds[i] = exec.CommandContext(ctx, "curl", "-sSf", "-o", filepath.Join(targets, fmt.Sprintf("curl-%d", i)), "http://"+ngAddr+"/image.raw")
			if err := cmds[i].Start(); err != nil {
				return 0, err
			}
		}
		var errs []error
		for _, c := range cmds {
			errs = append(errs, c.Wait())
		}
		secs := time.Since(start).Seconds()
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
		for i := range cmds {
			if st, err := os.Stat(filepath.Join(targets, fmt.Sprintf("curl-%d", i))); err != nil || st.Size() != int64(mib)<<20 {
				return 0, fmt.Errorf("curl %d: incomplete file (%v)", i, err)
			}
		}
		return secs, nil
	}
	times := map[string][]float64{}
	tools := []struct {
		name string
		run  func() (float64, error)
	}{{"loom", loom}, {"nginx", nginx}}
	for r := 0; r < rounds; r++ {
		for i := range tools {
			t := tools[(i+r)%len(tools)] // alternate who goes first
			secs, err := t.run()
			if err != nil {
				return 0, 0, fmt.Errorf("%s: %w", t.name, err)
			}
			times[t.name] = append(times[t.name], secs)
		}
	}
	return median(times["loom"]), median(times["nginx"]), nil
}
