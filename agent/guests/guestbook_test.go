package guests_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/scripts/vmtest"
)

// TestGuestbook: the sample service on real guests. loomd and a host
// agent on this machine (offering 8 vCPUs on whatever it has); the
// guestbook deployed from its manifest comes up 5 web + 3 worker Ready;
// an entry posted to the service endpoint travels web → queue → worker →
// book and is shown by the web role; pages come from more than one web
// instance; a worker's QEMU killed with -9 is restarted in place and the
// service keeps working; deleting the service removes its guests.
func TestGuestbook(t *testing.T) {
	require(t)
	vmtest.Require(t, vmtest.Built("build/roles/guestbook-web.tar", "build/roles/guestbook-worker.tar"))
	r := newRig(t)
	r.loom("image", "add", filepath.Join(root, "build/roles/guestbook-web.tar"), "--name", "guestbook-web")
	r.loom("image", "add", filepath.Join(root, "build/roles/guestbook-worker.tar"), "--name", "guestbook-worker")
	r.startAgent("--vcpus", "8")

	// The sample's manifest as shipped, on a port free here.
	b, err := os.ReadFile(filepath.Join(root, "images/services/guestbook/guestbook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	manifest := strings.Replace(string(b), "port: 80,", fmt.Sprintf("port: %d,", port), 1)
	if manifest == string(b) {
		t.Fatal("the sample manifest names no port 80 to replace")
	}
	mf := filepath.Join(r.dir, "guestbook.yaml")
	if err := os.WriteFile(mf, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	waitNodeReady(t, r)
	start := time.Now()
	if out := r.loom("service", "deploy", mf); !strings.Contains(out, "5 web and 3 worker") {
		t.Errorf("deploy said %q", out)
	}
	ins := waitInstances(t, r, "5 web + 3 worker Ready", 8*time.Minute, func(ins []api.Instance) bool {
		return ready(ins, "web") == 5 && ready(ins, "worker") == 3
	})
	t.Logf("5 web + 3 worker instances Ready %.0fs after deploy", time.Since(start).Seconds())

	// An entry goes in through the endpoint and comes back processed.
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	resp, err := http.Post(url+"/entries", "text/plain", strings.NewReader("hello loom from the test"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /entries = %s, want 202", resp.Status)
	}
	start = time.Now()
	e := waitEntry(t, url, "hello loom from the test", 2*time.Minute)
	t.Logf("the entry came back processed after %.1fs: %+v", time.Since(start).Seconds(), e)
	if e.Upper != "HELLO LOOM FROM THE TEST" || e.Words != 5 || !isInstance(ins, "worker", e.Worker) || !isInstance(ins, "web", e.Web) {
		t.Errorf("processed entry %+v: want the upper case, 5 words, a worker instance and a web instance", e)
	}
	// Pages come from several web instances: the endpoint spreads
	// connections (each page on a new one here).
	webs := map[string]bool{}
	fresh := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range 10 {
		resp, err := fresh.Get(url + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "HELLO LOOM FROM THE TEST") {
			t.Fatalf("GET / = %s %q", resp.Status, body)
		}
		webs[strings.Fields(string(body))[5]] = true // "guestbook (page served by web ID): …"
	}
	t.Logf("10 pages on new connections came from %d web instances", len(webs))
	if len(webs) < 2 {
		t.Errorf("10 pages were all served by %v, want the endpoint to spread them", webs)
	}

	// kill -9 of a worker's QEMU: restarted in place, and work goes on.
	var worker api.Instance
	for _, in := range ins {
		if in.Role == "worker" {
			worker = in
		}
	}
	pid := r.qemuPID(worker.ID)
	if pid <= 0 {
		t.Fatalf("no QEMU pid for worker %s", worker.ID)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitInstances(t, r, "the killed worker restarted and Ready", 4*time.Minute, func(ins []api.Instance) bool {
		for _, in := range ins {
			if in.ID == worker.ID {
				return in.State == api.InstanceReady && in.Restarts >= 1 && r.qemuPID(worker.ID) != pid
			}
		}
		return false
	})
	resp, err = http.Post(url+"/entries", "text/plain", strings.NewReader("after the crash"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitEntry(t, url, "after the crash", 2*time.Minute)

	// Deleting the service stops and removes its guests.
	r.loom("service", "delete", "guestbook")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out := r.loom("vm", "list")
		if !strings.Contains(out, "guestbook") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guestbook's VMs still listed 2 minutes after delete:\n%s", out)
		}
		time.Sleep(time.Second)
	}
}

func waitNodeReady(t *testing.T, r *rig) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(r.loom("nodes"), "Ready") {
		if time.Now().After(deadline) {
			t.Fatalf("the host agent's node is not Ready:\n%s", r.loom("nodes"))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitInstances polls the guestbook's instances until ok.
func waitInstances(t *testing.T, r *rig, what string, d time.Duration, ok func([]api.Instance) bool) []api.Instance {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var ins []api.Instance
		if err := json.Unmarshal([]byte(r.loom("instance", "list", "guestbook", "-o", "json")), &ins); err != nil {
			t.Fatal(err)
		}
		if ok(ins) {
			return ins
		}
		select {
		case <-r.agentExit:
			t.Fatalf("waiting for %s, the host agent exited", what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %v:\n%s", what, d, r.loom("instance", "list", "guestbook"))
		}
		time.Sleep(time.Second)
	}
}

func ready(ins []api.Instance, role string) int {
	n := 0
	for _, in := range ins {
		if in.Role == role && in.State == api.InstanceReady {
			n++
		}
	}
	return n
}

func isInstance(ins []api.Instance, role, id string) bool {
	for _, in := range ins {
		if in.Role == role && in.ID == id {
			return true
		}
	}
	return false
}

// entry is a processed guestbook entry as /book.json shows it.
type entry struct {
	Text, Upper, Web, Worker string
	Words                    int
}

// waitEntry polls the book until text shows in it, processed.
func waitEntry(t *testing.T, url, text string, d time.Duration) entry {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		code, body := get(t, url+"/book.json")
		if code == 200 {
			var page struct {
				Book []entry
			}
			if err := json.Unmarshal([]byte(body), &page); err != nil {
				t.Fatalf("/book.json: %v: %q", err, body)
			}
			for _, e := range page.Book {
				if e.Text == text {
					return e
				}
			}
		}
		last = fmt.Sprintf("%d %q", code, body)
		if time.Now().After(deadline) {
			t.Fatalf("%q not in the book after %v; last page: %s", text, d, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
