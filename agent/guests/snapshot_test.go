package guests_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

type whoami struct {
	Instance      string `json:"instance"`
	AgentInstance string `json:"agentInstance"`
	RandomAtStart string `json:"randomAtStart"`
	RandomNow     string `json:"randomNow"`
	TimeUnixNano  int64  `json:"timeUnixNano"`
}

// TestSnapshotGuests: through loomd and a host agent, the first guest of a
// machine builds the host's saved state of it and both guests resume from
// it, each with its own name (as its role and its guest agent know it),
// its own random bytes and the right time; a reboot boots one cold; a
// corrupt state is refused, discarded and the guest booted cold, and the
// next guest builds the state again.
func TestSnapshotGuests(t *testing.T) {
	require(t)
	r := newRig(t)
	r.loom("image", "add", filepath.Join(root, "build/roles/web.tar"), "--name", "web")
	r.startAgent()
	waitNodeReady(t, r)
	create := func() string {
		return strings.TrimSpace(r.loom("vm", "create", "--vcpus", "1", "--memory", "256", "--package", "web"))
	}
	ready := func(id string) api.VM {
		return r.waitVM(id, "Running", 4*time.Minute, running)
	}
	snapDir := filepath.Join(r.guestDir, "snapshots")
	keys := func() []string {
		ents, _ := os.ReadDir(snapDir)
		var k []string
		for _, e := range ents {
			if !strings.Contains(e.Name(), ".") {
				k = append(k, e.Name())
			}
		}
		return k
	}
	ask := func(v api.VM) whoami {
		t.Helper()
		code, body := get(t, "http://"+v.Endpoint+"/whoami")
		var w whoami
		if code != 200 || json.Unmarshal([]byte(body), &w) != nil {
			t.Fatalf("vm %s: /whoami: %d %s", v.ID, code, body)
		}
		return w
	}
	banners := func(id string) int {
		b, _ := os.ReadFile(filepath.Join(r.guestDir, "guests", id, "console.log"))
		return strings.Count(string(b), "Linux version")
	}

	a1, a2 := create(), create()
	v1, v2 := ready(a1), ready(a2)
	if k := keys(); len(k) != 1 {
		t.Fatalf("snapshots kept: %v, want one for the one machine", k)
	}
	seen := map[string]string{}
	for _, v := range []api.VM{v1, v2} {
		if v.Boot != "snapshot" {
			t.Errorf("vm %s started %q, want from the snapshot", v.ID, v.Boot)
		}
		if n := banners(v.ID); n != 0 {
			t.Errorf("vm %s: %d kernel banners on its console: it booted instead of resuming", v.ID, n)
		}
		w := ask(v)
		if w.Instance != v.ID || w.AgentInstance != v.ID {
			t.Errorf("vm %s: the role says it is %q, the guest agent %q", v.ID, w.Instance, w.AgentInstance)
		}
		for _, rnd := range []string{w.RandomAtStart, w.RandomNow} {
			if other, dup := seen[rnd]; dup || len(rnd) != 32 {
				t.Errorf("vm %s: /dev/urandom gave %q, as %s did: guests of one snapshot share random state", v.ID, rnd, other)
			}
			seen[rnd] = v.ID
		}
		if off := time.Since(time.Unix(0, w.TimeUnixNano)); off > 2*time.Second || off < -2*time.Second {
			t.Errorf("vm %s: the guest's clock is %v off the host's", v.ID, off)
		}
	}

	// A reboot boots the kernel: the guest comes back cold.
	r.loom("vm", "reboot", a1)
	v1 = r.waitVM(a1, "rebooted and Running", 4*time.Minute, func(v api.VM) bool { return v.Rebooted == 1 && running(v) })
	if v1.Boot != "cold" || banners(a1) != 1 {
		t.Errorf("vm %s after a reboot: started %q with %d kernel banners, want cold with one", a1, v1.Boot, banners(a1))
	}
	if w := ask(v1); w.Instance != a1 || w.AgentInstance != a1 {
		t.Errorf("vm %s after a reboot says it is %+v", a1, w)
	}

	// Room for the next guests (a vCPU each, the host has two).
	for _, id := range []string{a1, a2} {
		r.loom("vm", "delete", id)
	}
	deadline := time.Now().Add(time.Minute)
	for list := r.loom("vm", "list"); strings.Contains(list, a1) || strings.Contains(list, a2); list = r.loom("vm", "list") {
		if time.Now().After(deadline) {
			t.Fatalf("deleted vms still listed:\n%s", list)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// A corrupt state: the guest boots cold, the state is discarded.
	key := keys()[0]
	state := filepath.Join(snapDir, key, "state")
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(state, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("not what was saved"), fi.Size()/3)
	f.Close()
	a3 := create()
	v3 := ready(a3)
	if !strings.HasPrefix(v3.Boot, "cold: snapshot corrupt") {
		t.Errorf("vm %s from a corrupt state started %q, want cold with the reason", a3, v3.Boot)
	}
	if w := ask(v3); w.Instance != a3 {
		t.Errorf("vm %s from a corrupt state says it is %+v", a3, w)
	}
	if k := keys(); len(k) != 0 {
		t.Errorf("snapshots kept after a corrupt one: %v, want it discarded", k)
	}
	// The next guest builds it again and resumes from it.
	a4 := create()
	if v4 := ready(a4); v4.Boot != "snapshot" {
		t.Errorf("vm %s after the discard started %q, want from a rebuilt snapshot", a4, v4.Boot)
	}
	if k := keys(); len(k) != 1 || k[0] != key {
		t.Errorf("snapshots after the rebuild: %v, want %s again (the same machine)", k, key)
	}
}
