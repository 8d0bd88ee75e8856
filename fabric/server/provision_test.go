package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/image"
	"github.com/loomfabric/loom/fabric/node"
	"github.com/loomfabric/loom/fabric/store"
	"github.com/loomfabric/loom/fabric/vms"
)

func newFullAPI(t *testing.T) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), store.Config{DataDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	guests := vms.New(vms.Config{Store: st}, nil)
	reg := node.New(node.Config{CA: testCA, Store: st, Guests: guests, HeartbeatInterval: time.Second}, nil)
	lib := &image.Library{Blobs: image.Blobs{Dir: filepath.Join(dir, "images")}, KV: st,
		InUse: func(ctx context.Context, name string) (string, error) {
			if user, err := node.ProfilesUsing(ctx, st.Profiles, name); user != "" || err != nil {
				return user, err
			}
			return vms.VMsUsing(ctx, st.VMs, name)
		}}
	srv := serve(t, New(Config{Registry: reg, OperatorToken: opToken, EnrollToken: enrollToken, Images: lib, Profiles: st, VMs: guests}, nil))
	t.Cleanup(srv.Close)
	return srv
}

func TestImagesProfilesAndGoal(t *testing.T) {
	srv := newFullAPI(t)
	img := make([]byte, 64<<10)
	copy(img[8192:], bytes.Repeat([]byte("loom"), 1024)) // one 4 KiB data block at 8 KiB

	var m api.Manifest
	if code := call(t, srv, "POST", "/v1/images?name=host", opToken, string(img), &m); code != 200 {
		t.Fatalf("upload = %d", code)
	}
	if m.DataBytes != 4096 || m.Size != 64<<10 {
		t.Errorf("manifest: data %d size %d, want 4096 and 65536", m.DataBytes, m.Size)
	}
	if code := call(t, srv, "POST", "/v1/images?name=host", opToken, string(img), nil); code != 409 {
		t.Errorf("second upload under the same name = %d, want 409", code)
	}
	if code := call(t, srv, "POST", "/v1/images?name=Bad/Name", opToken, string(img), nil); code != 400 {
		t.Errorf("upload with a bad name = %d, want 400", code)
	}
	var full api.Manifest
	if code := call(t, srv, "GET", "/v1/images/host", enrollToken, "", &full); code != 200 || len(full.Ranges) != 1 || full.Validate() != nil {
		t.Fatalf("GET manifest with the enrollment token = %d, %d ranges, valid: %v", code, len(full.Ranges), full.Validate())
	}

	// The blob, by Range, as the agent fetches it.
	req, _ := http.NewRequest("GET", srv.URL+"/v1/images/host/blob", nil)
	req.Header.Set("Authorization", "Bearer "+enrollToken)
	req.Header.Set("Range", "bytes=8192-12287")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(body, img[8192:12288]) {
		t.Errorf("ranged blob GET = %d, %d bytes (match %v), want 206 and the 4 KiB data block", resp.StatusCode, len(body), bytes.Equal(body, img[8192:12288]))
	}

	var e api.Error
	if code := call(t, srv, "PUT", "/v1/profiles/host", opToken, `{"image":"nope"}`, &e); code != 400 || !strings.Contains(e.Message, "image") {
		t.Errorf("profile with an unknown image = %d %q, want 400 naming image", code, e.Message)
	}
	if code := call(t, srv, "PUT", "/v1/profiles/host", opToken, `{"image":"host","disk":"biggest"}`, &e); code != 400 || !strings.Contains(e.Message, "disk:") {
		t.Errorf("profile with a bad disk rule = %d %q, want 400 naming disk", code, e.Message)
	}
	if code := call(t, srv, "PUT", "/v1/profiles/host", opToken, `{"image":"host","disk":"first:1GiB"}`, nil); code != 200 {
		t.Fatalf("PUT profile = %d", code)
	}
	if code := call(t, srv, "DELETE", "/v1/images/host", opToken, "", &e); code != 409 || !strings.Contains(e.Message, "profile host") {
		t.Errorf("rm of an image in use = %d %q, want 409 naming the profile", code, e.Message)
	}

	// A node, its goal, provisioning and the phase reports.
	var r api.RegisterResponse
	call(t, srv, "POST", "/v1/nodes/register", enrollToken, regBody, &r)
	var g api.Goal
	if code := call(t, srv, "GET", "/v1/nodes/"+r.NodeID+"/goal", asNode(r), "", &g); code != 200 || g.Action != api.ActionNone {
		t.Fatalf("first goal = %d %+v, want 200 none", code, g)
	}
	start := time.Now()
	req, _ = http.NewRequest("GET", srv.URL+"/v1/nodes/"+r.NodeID+"/goal?incarnation="+itoa(g.Incarnation)+"&wait=1s", nil)
	hc, _ := clientFor(t, srv, asNode(r))
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 304 || time.Since(start) < time.Second {
		t.Errorf("unchanged goal = %d after %v, want 304 after the 1s wait", resp.StatusCode, time.Since(start))
	}
	// A waiting poll is answered as soon as the node is provisioned.
	got := make(chan api.Goal, 1)
	go func() {
		var g2 api.Goal
		call(t, srv, "GET", "/v1/nodes/"+r.NodeID+"/goal?wait=20s&incarnation="+itoa(g.Incarnation), asNode(r), "", &g2)
		got <- g2
	}()
	time.Sleep(200 * time.Millisecond)
	if code := call(t, srv, "POST", "/v1/nodes/"+r.NodeID+"/provision", opToken, `{"profile":"host"}`, nil); code != 200 {
		t.Fatalf("provision = %d", code)
	}
	select {
	case g2 := <-got:
		if g2.Action != api.ActionProvision || g2.Image == nil || len(g2.Image.Ranges) != 1 || g2.ImageURL != "/v1/images/host/blob" || g2.Provision != 1 {
			t.Errorf("goal after provision = %+v", g2)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll was not answered after provisioning")
	}
	for _, step := range []struct {
		body string
		want int
	}{
		{`{"phase":"Imaged","provision":7}`, 409},
		{`{"phase":"Imaging","provision":1,"progress":{"bytes":10,"total":4096}}`, 200},
		{`{"phase":"Imaged","provision":1}`, 200},
		{`{"phase":"Booting","provision":1}`, 200},
		{`{"phase":"Ready"}`, 409},
	} {
		if code := call(t, srv, "POST", "/v1/nodes/"+r.NodeID+"/status", asNode(r), step.body, nil); code != step.want {
			t.Errorf("status %s = %d, want %d", step.body, code, step.want)
		}
	}
	var n api.Node
	call(t, srv, "GET", "/v1/nodes/"+r.NodeID, opToken, "", &n)
	if n.Phase != api.PhaseBooting || n.Imaged != 1 {
		t.Errorf("node after the reports: %s imaged %d, want Booting imaged 1", n.Phase, n.Imaged)
	}
	call(t, srv, "GET", "/v1/nodes/"+r.NodeID+"/goal", asNode(r), "", &g)
	if g.Action != api.ActionBootHost {
		t.Errorf("goal of an imaged node = %s, want boot-host", g.Action)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
