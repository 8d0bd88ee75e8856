// Command ui measures the dashboard's first paint with a fleet: a real
// loomd (build/bin/loomd) holding -nodes nodes in racks of 40 (imported,
// a fifth of them registered, some imaging with progress, some failed),
// and Debian's headless Chromium signed in to /ui/.
//
// first_paint_ms is, for a fresh page load of /ui/ with a session, the
// time from the navigation's start to the frame after the racks grid has
// drawn every node (the page's own mark, window.loomFirstPaint, taken in
// requestAnimationFrame after the grid is built): the HTML, script and
// style fetched, the session checked, the stream's first message of every
// tile received and drawn. Median of -trials loads, each in a new tab.
//
//	go run ./bench/ui [-nodes 1000] [-trials 7]
//
// Last line: bench ui: nodes=… first_paint_ms=… (goal: under 1,000 ms)
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/fabric/loomd/rig"
	"github.com/loomfabric/loom/scripts/browser"
)

func main() {
	nodes := flag.Int("nodes", 1000, "nodes in the fleet")
	trials := flag.Int("trials", 7, "page loads measured (the median is reported)")
	bin := flag.String("loomd", "build/bin/loomd", "loomd binary")
	shot := flag.String("screenshot", "build/ui/bench-ui.png", "where the last load's screen goes (\"\": nowhere)")
	flag.Parse()
	if *nodes < 1 || *trials < 1 {
		log.Fatal("bench ui: -nodes and -trials must be at least 1")
	}
	if _, err := os.Stat(*bin); err != nil {
		log.Fatalf("bench ui: %v (make build)", err)
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "bench-ui-")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	c, err := rig.Start(ctx, *bin, dir, 1)
	if err != nil {
		log.Fatal("bench ui: ", err)
	}
	defer c.Close()
	r := c.Replicas[0]
	op := r.Client(r.Token())
	if err := fleet(ctx, op, r.Client(r.EnrollToken()), *nodes); err != nil {
		log.Fatal("bench ui: making the fleet: ", err)
	}

	b, stop, err := browser.Start(1440, 900)
	if err != nil {
		log.Fatal("bench ui: ", err)
	}
	defer stop()
	page := strings.TrimSuffix(r.API, "/") + "/ui/"
	if err := login(b, page, op.Token); err != nil {
		log.Fatal("bench ui: signing in: ", err)
	}
	var ms []float64
	for i := range *trials {
		v, err := firstPaint(b, page, *nodes)
		if err != nil {
			log.Fatalf("bench ui: load %d: %v", i+1, err)
		}
		fmt.Printf("load %d: %.0f ms\n", i+1, v)
		ms = append(ms, v)
	}
	if *shot != "" {
		if err := screenshot(b, page, *shot); err != nil {
			log.Fatal("bench ui: screenshot: ", err)
		}
	}
	slices.Sort(ms)
	med := ms[len(ms)/2]
	fmt.Printf("loads: %d, fastest %.0f ms, slowest %.0f ms; goal under 1000 ms: %s\n", len(ms), ms[0], ms[len(ms)-1], map[bool]string{true: "met", false: "NOT met"}[med < 1000])
	fmt.Printf("bench ui: nodes=%d first_paint_ms=%.0f\n", *nodes, med)
}

// fleet imports n nodes in racks of 40, registers a fifth of them, and
// sets a quarter of those imaging (with progress) and a few failed.
func fleet(ctx context.Context, op, enroll *client.Client, n int) error {
	macs := make([]string, n)
	for i := range n {
		macs[i] = fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
	}
	for lo := 0; lo < n; lo += 400 { // an import takes up to 512 servers
		var csv strings.Builder
		csv.WriteString("mac,rack,slot\n")
		for i := lo; i < min(n, lo+400); i++ {
			fmt.Fprintf(&csv, "%s,r%02d,%d\n", macs[i], i/40+1, i%40+1)
		}
		if _, err := op.ImportRack(ctx, []byte(csv.String())); err != nil {
			return err
		}
	}
	img := make([]byte, 1<<20)
	_, _ = rand.Read(img)
	m, err := op.AddImage(ctx, "host", bytes.NewReader(img), nil)
	if err != nil {
		return err
	}
	if _, err := op.PutProfile(ctx, api.Profile{Name: "p", Image: "host"}); err != nil {
		return err
	}
	for i := 0; i < n; i += 5 {
		reg, nc, err := enroll.Enroll(ctx, api.Registration{MAC: macs[i], Inventory: api.Inventory{
			CPU: api.CPU{Model: "bench", Count: 8}, Memory: 32 << 30, DMI: api.DMI{Vendor: "Loom", Product: "bench server"},
			NICs: []api.NIC{{Name: "eth0", MAC: macs[i], Link: true}}}})
		if err != nil {
			return err
		}
		switch i % 20 {
		case 5, 10:
			if _, err := op.Provision(ctx, reg.NodeID, "p"); err != nil {
				return err
			}
			g, _, err := nc.Goal(ctx, reg.NodeID, 0, 0)
			if err != nil {
				return err
			}
			st := api.Status{Phase: api.PhaseImaging, Provision: g.Provision, Progress: &api.Progress{Bytes: uint64(i) * m.DataBytes / uint64(n), Total: m.DataBytes}}
			if i%20 == 10 {
				st = api.Status{Phase: api.PhaseFailed, Provision: g.Provision, Reason: "bench: a failed imaging", Cause: api.CauseOther}
			}
			if _, err := nc.Status(ctx, reg.NodeID, st); err != nil {
				return err
			}
		}
	}
	got, err := op.Nodes(ctx)
	if err != nil {
		return err
	}
	if len(got) != n {
		return fmt.Errorf("%d nodes in the fabric, want %d", len(got), n)
	}
	return nil
}

// login signs the browser in (the session cookie is the browser's, for
// every tab).
func login(b context.Context, page, token string) error {
	ctx, cancel := context.WithTimeout(b, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), token), chromedp.Click(chromedp.CSS("#login-submit"))); err != nil {
		return err
	}
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.body.dataset.painted !== undefined`))
	return err
}

// firstPaint loads the page in a new tab and returns its mark.
func firstPaint(b context.Context, page string, n int) (float64, error) {
	tab, closeTab := chromedp.NewContext(b)
	defer closeTab()
	if err := chromedp.Do(tab); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(tab, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		return 0, err
	}
	v, err := chromedp.Run(ctx, chromedp.Poll[float64](fmt.Sprintf(`Number(document.body.dataset.painted) === %d && window.loomFirstPaint`, n)))
	if err != nil {
		state, _ := chromedp.Run(tab, chromedp.Evaluate[string](`JSON.stringify({painted: document.body.dataset.painted, tiles: document.querySelectorAll('.tile').length, login: !document.querySelector('#login').hidden, error: document.querySelector('#login-error').textContent})`))
		return 0, fmt.Errorf("the grid never drew %d nodes (%s): %w", n, state, err)
	}
	return v, nil
}

// screenshot saves what a laptop's screen shows of the grid.
func screenshot(b context.Context, page, path string) error {
	ctx, cancel := context.WithTimeout(b, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		return err
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`Number(document.body.dataset.painted) > 0`)); err != nil {
		return err
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}
