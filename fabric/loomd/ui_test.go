package loomd

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/client"
	"github.com/loomfabric/loom/scripts/browser"
	"github.com/loomfabric/loom/scripts/vmtest"
)

// browser starts a headless Chromium (closed with the test); without one
// the test skips, or fails under LOOM_REQUIRE_VM=1.
func startBrowser(t testing.TB, width, height int) context.Context {
	t.Helper()
	if _, err := browser.Path(); err != nil {
		vmtest.RequireTools(t, "apt-get install chromium, or make deps", "chromium")
	}
	ctx, stop, err := browser.Start(width, height)
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	t.Cleanup(stop)
	return ctx
}

// shot saves a screenshot of the page under build/ui/ for review.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	dir := filepath.Join("..", "..", "build", "ui")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// within runs a browser step with a time limit.
func within[T any](t *testing.T, ctx context.Context, d time.Duration, what string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// TestDashboard drives the dashboard in headless Chromium against an
// in-process loomd over TLS: a wrong token is refused at login, the right
// one signs in; the racks grid shows an imported rack's nodes coloured by
// phase; a node's progress bar moves while it images (its agent's
// heartbeats, as the maintenance agent sends them); a node page opens from
// its tile and provisions the node behind a confirmation, which the
// fabric records as the operator's; a missing node and a cancelled action
// change nothing. Screenshots go to build/ui/.
func TestDashboard(t *testing.T) {
	b := startBrowser(t, 1440, 900)
	cfg := &Config{DataDir: t.TempDir(), API: freeAddr(t), ConsoleDir: t.TempDir()}
	defer inProcess(t, cfg)()
	if err := os.WriteFile(filepath.Join(cfg.ConsoleDir, "52:54:00:bb:01:03.log"), []byte("\x1b[2JiPXE booting\r\nLOOM-MARK registered\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	op, _ := operator(t, cfg)
	ctx := context.Background()

	img := make([]byte, 2<<20)
	_, _ = rand.Read(img[:1<<20])
	if _, err := op.AddImage(ctx, "host", bytes.NewReader(img), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := op.PutProfile(ctx, api.Profile{Name: "web-host", Image: "host"}); err != nil {
		t.Fatal(err)
	}
	csv := "mac,rack,slot\n"
	for i := 1; i <= 12; i++ {
		csv += fmt.Sprintf("52:54:00:bb:%02x:%02x,r%d,%d\n", i/7+1, i, i/7+1, i)
	}
	if _, err := op.ImportRack(ctx, []byte(csv)); err != nil {
		t.Fatal(err)
	}
	ec := enroller(t, cfg, op)
	register := func(mac string) (string, *client.Client) {
		t.Helper()
		inv := api.Inventory{CPU: api.CPU{Model: "QEMU Virtual CPU", Count: 4}, Memory: 8 << 30,
			DMI:   api.DMI{Vendor: "QEMU", Product: "Standard PC (Q35)", Serial: "S-" + mac[12:]},
			NICs:  []api.NIC{{Name: "eth0", MAC: mac, Link: true, SpeedMbps: 1000}},
			Disks: []api.Disk{{Name: "vda", SizeBytes: 64 << 30, Model: "QEMU HARDDISK"}}}
		r, nc, err := ec.Enroll(ctx, api.Registration{MAC: mac, Inventory: inv})
		if err != nil {
			t.Fatal(err)
		}
		return r.NodeID, nc
	}
	imaging, ic := register("52:54:00:bb:01:02")
	idle, _ := register("52:54:00:bb:01:03")
	if _, err := op.Provision(ctx, imaging, "web-host"); err != nil {
		t.Fatal(err)
	}
	g, ok, err := ic.Goal(ctx, imaging, 0, 0)
	if err != nil || !ok || g.Action != api.ActionProvision {
		t.Fatalf("goal = %+v %v %v", g, ok, err)
	}
	total := g.Image.DataBytes
	progress := func(frac float64) {
		t.Helper()
		st := api.Status{Phase: api.PhaseImaging, Provision: g.Provision, Progress: &api.Progress{Bytes: uint64(frac * float64(total)), Total: total, BytesPerS: 50 << 20}}
		if _, err := ic.Status(ctx, imaging, st); err != nil {
			t.Fatal(err)
		}
	}
	progress(0.2)

	url := "https://" + cfg.API + "/"
	tok := strings.TrimSpace(op.Token)

	// A wrong token: an error on the login form, still signed out.
	if err := chromedp.Do(b, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	within(t, b, 15*time.Second, "login form", chromedp.WaitVisible(chromedp.CSS("#token")))
	if err := chromedp.Do(b, chromedp.SendKeys(chromedp.CSS("#token"), "wrong-token"), chromedp.Click(chromedp.CSS("#login-submit"))); err != nil {
		t.Fatal(err)
	}
	msg := within(t, b, 10*time.Second, "login error", chromedp.Poll[string](`document.querySelector('#login-error').textContent`))
	if !strings.Contains(msg, "wrong or revoked") {
		t.Errorf("login error = %q", msg)
	}
	shot(t, b, "login-refused")

	// The right one: the racks grid, every imported node, by rack.
	if err := chromedp.Do(b, chromedp.Evaluate[chromedp.Void](`document.querySelector('#token').value = ''`), chromedp.SendKeys(chromedp.CSS("#token"), tok), chromedp.Click(chromedp.CSS("#login-submit"))); err != nil {
		t.Fatal(err)
	}
	n := within(t, b, 15*time.Second, "racks grid", chromedp.Poll[int](`document.querySelectorAll('.tile').length >= 12 && document.querySelectorAll('.tile').length`))
	if n != 12 {
		t.Errorf("%d tiles, want 12", n)
	}
	racks := within(t, b, 5*time.Second, "racks", chromedp.Evaluate[[]string](`[...document.querySelectorAll('.rack h2')].map(e => e.textContent)`))
	if len(racks) != 2 || !strings.HasPrefix(racks[0], "Rack r1") || !strings.HasPrefix(racks[1], "Rack r2") {
		t.Errorf("racks = %q", racks)
	}
	phases := within(t, b, 5*time.Second, "phases", chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll('.tile')].map(e => [e.dataset.id, e.dataset.phase]))`))
	if phases[imaging] != "Imaging" || phases[idle] != "Registered" {
		t.Errorf("tile phases: %v", phases)
	}
	who := within(t, b, 5*time.Second, "who", chromedp.Text(chromedp.CSS("#who")))
	if !strings.Contains(who, "operator") {
		t.Errorf("signed in as %q", who)
	}

	// The imaging node's bar moves with its heartbeats, no reload.
	width := func() float64 {
		return within(t, b, 5*time.Second, "bar width", chromedp.Evaluate[float64](fmt.Sprintf(`parseFloat(document.querySelector('.tile[data-id=%q] .progress i').style.width)`, imaging)))
	}
	within(t, b, 10*time.Second, "first progress", chromedp.Poll[bool](fmt.Sprintf(`parseFloat(document.querySelector('.tile[data-id=%q] .progress i').style.width) >= 19`, imaging)))
	before := width()
	shot(t, b, "racks-imaging-20")
	progress(0.75)
	within(t, b, 10*time.Second, "progress moved", chromedp.Poll[bool](fmt.Sprintf(`parseFloat(document.querySelector('.tile[data-id=%q] .progress i').style.width) >= 74`, imaging)))
	if after := width(); after <= before {
		t.Errorf("progress bar %v%% → %v%%: did not move", before, after)
	}
	label := within(t, b, 5*time.Second, "label", chromedp.Text(chromedp.CSS(fmt.Sprintf(`.tile[data-id=%q] .ph`, imaging))))
	if label != "Imaging 75%" {
		t.Errorf("tile label %q", label)
	}
	time.Sleep(700 * time.Millisecond) // the bar's transition
	shot(t, b, "racks-imaging-75")

	// A node page from its tile, with its inventory and events.
	if err := chromedp.Do(b, chromedp.Click(chromedp.CSS(fmt.Sprintf(`.tile[data-id=%q]`, idle)))); err != nil {
		t.Fatal(err)
	}
	within(t, b, 10*time.Second, "node page", chromedp.Poll[bool](fmt.Sprintf(`document.querySelector('main h1') && document.querySelector('main h1').textContent === %q`, idle)))
	page := within(t, b, 5*time.Second, "node page text", chromedp.Text(chromedp.CSS("main")))
	for _, want := range []string{"Standard PC (Q35)", "4 × QEMU Virtual CPU", "8.0 GiB", "vda", "64.0 GiB", "Registered", "agent", "No BMC", "Console", "LOOM-MARK registered"} {
		if !strings.Contains(page, want) {
			t.Errorf("node page lacks %q", want)
		}
	}
	shot(t, b, "node")

	// Provision behind a confirmation: Cancel changes nothing, Confirm
	// provisions with the chosen profile, recorded as the operator's.
	provision := func(button string) {
		t.Helper()
		if err := chromedp.Do(b, chromedp.Click(chromedp.CSS(".actions button.primary"))); err != nil {
			t.Fatal(err)
		}
		within(t, b, 5*time.Second, "confirm dialog", chromedp.Poll[bool](`document.querySelector('#confirm').open`))
		if button == "#confirm-ok" {
			shot(t, b, "node-confirm")
		}
		if err := chromedp.Do(b, chromedp.Click(chromedp.CSS(button))); err != nil {
			t.Fatal(err)
		}
	}
	provision("#confirm-cancel")
	time.Sleep(500 * time.Millisecond)
	if nd, err := op.Node(ctx, idle); err != nil || nd.Provision != 0 {
		t.Fatalf("after Cancel: %+v %v", nd.Provision, err)
	}
	provision("#confirm-ok")
	toastText := within(t, b, 10*time.Second, "toast", chromedp.Poll[string](`document.querySelector('.toast') && document.querySelector('.toast').textContent`))
	if !strings.Contains(toastText, "done") {
		t.Errorf("toast %q", toastText)
	}
	nd, err := op.Node(ctx, idle)
	if err != nil || nd.Provision == 0 || nd.Profile != "web-host" {
		t.Fatalf("after Confirm: provision %d profile %q %v", nd.Provision, nd.Profile, err)
	}
	evs, err := op.Events(ctx, client.EventQuery{Object: idle})
	if err != nil {
		t.Fatal(err)
	}
	var byOperator bool
	for _, e := range evs {
		byOperator = byOperator || (e.Kind == api.EventAction && e.Actor == "operator" && strings.Contains(e.Reason, "provision"))
	}
	if !byOperator {
		t.Errorf("no provision action by the operator among %+v", evs)
	}

	// A VM stopped from the VMs page, behind a confirmation.
	hostMAC := "52:54:00:bb:02:0c"
	host, _, err := ec.Enroll(ctx, api.Registration{Mode: api.ModeHost, MAC: hostMAC, Accel: &api.Accel{Accel: "tcg", CPU: "max"},
		Inventory: api.Inventory{CPU: api.CPU{Count: 8, Model: "t"}, Memory: 16 << 30, NICs: []api.NIC{{Name: "eth0", MAC: hostMAC, Link: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := op.CreateVM(ctx, api.VMRequest{Node: host.NodeID, Package: "host", VCPUs: 1, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(b, chromedp.Navigate(url+"ui/#/vms")); err != nil {
		t.Fatal(err)
	}
	stop := fmt.Sprintf(`[...document.querySelectorAll('main tr')].find(r => r.textContent.includes(%q))`, vm.ID)
	within(t, b, 10*time.Second, "VM row", chromedp.Poll[bool](stop+` !== undefined`))
	shot(t, b, "vms")
	within(t, b, 5*time.Second, "stop button", chromedp.Evaluate[chromedp.Void](stop+`.querySelectorAll('button')[1].click()`))
	if title := within(t, b, 5*time.Second, "confirm dialog", chromedp.Poll[string](`document.querySelector('#confirm').open && document.querySelector('#confirm-title').textContent`)); title != "Stop VM "+vm.ID {
		t.Errorf("dialog %q, want Stop VM %s", title, vm.ID)
	}
	if err := chromedp.Do(b, chromedp.Click(chromedp.CSS("#confirm-ok"))); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		v, err := op.VM(ctx, vm.ID)
		if err == nil && v.Desired == api.VMStopped {
			break
		}
		if i > 50 {
			t.Fatalf("the VM was not stopped: %+v %v", v.Desired, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Its page: where it runs, what it wants, the operator's stop.
	if err := chromedp.Do(b, chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="#/vm/%s"]`, vm.ID)))); err != nil {
		t.Fatal(err)
	}
	vmPage := within(t, b, 10*time.Second, "VM page", chromedp.Poll[string](fmt.Sprintf(`document.querySelector('main').textContent.includes('wants stopped') && document.querySelector('main').textContent.includes(%q) && document.querySelector('main').textContent`, vm.ID+"/stop")))
	for _, want := range []string{host.NodeID, "wants stopped", "1 vCPU, 256 MiB", "operator", "POST /v1/vms/" + vm.ID + "/stop"} {
		if !strings.Contains(vmPage, want) {
			t.Errorf("VM page lacks %q", want)
		}
	}
	shot(t, b, "vm")

	// A missing node: a clear answer, in the page and from the API.
	if err := chromedp.Do(b, chromedp.Navigate(url+"ui/#/node/n-no-such-node")); err != nil {
		t.Fatal(err)
	}
	missing := within(t, b, 10*time.Second, "missing node", chromedp.Poll[string](`document.querySelector('main .empty') && document.querySelector('main .empty').textContent`))
	if !strings.Contains(missing, "not found") {
		t.Errorf("missing node page: %q", missing)
	}
	res := within(t, b, 10*time.Second, "action on a missing node", chromedp.Evaluate[string](`call('POST', '/v1/nodes/n-no-such-node/reprovision').then(() => 'done', e => e.message)`, chromedp.EvalAsValue, chromedp.EvalAwaitPromise))
	if !strings.Contains(res, "not found") {
		t.Errorf("reprovision of a missing node: %q", res)
	}
	// The page's fetch without its CSRF token: refused, nothing done.
	res = within(t, b, 10*time.Second, "write without CSRF", chromedp.Evaluate[string](fmt.Sprintf(`fetch('/v1/nodes/%s/reprovision', {method: 'POST', credentials: 'same-origin'}).then(r => r.status + ' ' + r.statusText)`, idle), chromedp.EvalAwaitPromise))
	if !strings.HasPrefix(res, "403") {
		t.Errorf("write without the CSRF token: %q", res)
	}
	if again, _ := op.Node(ctx, idle); again.Provision != nd.Provision {
		t.Errorf("a refused write provisioned the node: %d → %d", nd.Provision, again.Provision)
	}
	shot(t, b, "missing-node")
	t.Log("screenshots in build/ui/")
}
