// Package browser starts the headless Chromium the dashboard's test and
// bench/ui drive (Debian's chromium; make deps installs it).
package browser

import (
	"context"
	"errors"
	"os/exec"

	"github.com/chromedp/chromedp"
)

// Path is the Chromium found on PATH, or an error naming the package.
func Path() (string, error) {
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on PATH (apt-get install chromium, or make deps)")
}

// Start runs a headless Chromium with a window of width×height and returns
// a chromedp context on its first tab; stop ends the browser. Loom's
// certificates are its own CA's, which the browser is told to accept.
func Start(width, height int) (ctx context.Context, stop func(), err error) {
	bin, err := Path()
	if err != nil {
		return nil, nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin),
		chromedp.NoSandbox, chromedp.IgnoreCertErrors, chromedp.WindowSize(width, height),
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	stop = func() { cancelTab(); cancelAlloc() }
	// Start it now, without a deadline: a timeout on a later call must not
	// end the browser.
	if err := chromedp.Do(ctx); err != nil {
		stop()
		return nil, nil, err
	}
	return ctx, stop, nil
}
