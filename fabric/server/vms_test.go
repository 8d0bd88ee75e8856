package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
)

// VMs over the API: field-named 400s, a 409 with the reason when no host
// has room, the host's goal listing its VMs, its reports becoming the
// VM's observed state, and delete.
func TestVMsAPI(t *testing.T) {
	srv := newFullAPI(t)
	if code := call(t, srv, "POST", "/v1/images?name=web", opToken, string(make([]byte, 8192)), nil); code != 200 {
		t.Fatalf("upload = %d", code)
	}
	var reg api.RegisterResponse
	host := strings.Replace(regBody, `{"mac"`, `{"mode":"host","mac"`, 1) // 4 CPUs, 1 GiB: 512 MiB for guests
	if code := call(t, srv, "POST", "/v1/nodes/register", enrollToken, host, &reg); code != 200 {
		t.Fatalf("register = %d", code)
	}
	var e api.Error
	if code := call(t, srv, "POST", "/v1/vms", opToken, `{"package":"web","vcpus":-2,"memoryMB":16}`, &e); code != 400 || !strings.Contains(e.Message, "vcpus: -2") || !strings.Contains(e.Message, "memoryMB: 16") {
		t.Errorf("bad request = %d %q, want 400 naming vcpus and memoryMB", code, e.Message)
	}
	if code := call(t, srv, "POST", "/v1/vms", opToken, `{"package":"web","memoryMB":1024}`, &e); code != 409 || !strings.Contains(e.Message, "has 4 vCPUs and 512 MiB free") {
		t.Errorf("too big = %d %q, want 409 saying what is free", code, e.Message)
	}
	if code := call(t, srv, "POST", "/v1/vms", opToken, `{"package":"nope"}`, &e); code != 400 || !strings.Contains(e.Message, "package") {
		t.Errorf("unknown package = %d %q, want 400 naming it", code, e.Message)
	}
	var vm api.VM
	if code := call(t, srv, "POST", "/v1/vms", opToken, `{"package":"web","memoryMB":256,"settings":{"greeting":"hi"}}`, &vm); code != 201 || vm.Node != reg.NodeID || vm.State != api.VMStatePending {
		t.Fatalf("create = %d %+v", code, vm)
	}
	// A create with the client's ID is idempotent: sent again (its answer
	// lost in a failover), it answers with the VM it made.
	var a1, a2 api.VM
	idReq := `{"id":"vm-00c0ffee00c0ffee","package":"web","memoryMB":128}`
	if code := call(t, srv, "POST", "/v1/vms", opToken, idReq, &a1); code != 201 || a1.ID != "vm-00c0ffee00c0ffee" {
		t.Fatalf("create with an ID = %d %+v", code, a1)
	}
	if code := call(t, srv, "POST", "/v1/vms", opToken, idReq, &a2); code/100 != 2 || a2.ID != a1.ID || !a2.Created.Equal(a1.Created) {
		t.Errorf("the same create again = %d %+v, want the first's VM", code, a2)
	}
	var all []api.VM
	if call(t, srv, "GET", "/v1/vms", opToken, "", &all); len(all) != 2 {
		t.Errorf("%d VMs after a create sent twice, want 2 (one each)", len(all))
	}
	if code := call(t, srv, "POST", "/v1/vms", opToken, `{"id":"vm-00c0ffee00c0ffee","package":"web","memoryMB":64}`, &e); code != 409 || !strings.Contains(e.Message, "different VM") {
		t.Errorf("a different create with a taken ID = %d %q, want 409", code, e.Message)
	}
	if code := call(t, srv, "POST", "/v1/vms", opToken, `{"id":"../x","package":"web"}`, &e); code != 400 || !strings.Contains(e.Message, "id:") {
		t.Errorf("a bad ID = %d %q, want 400 naming id", code, e.Message)
	}
	req0, _ := http.NewRequest("DELETE", srv.URL+"/v1/vms/"+a1.ID, nil)
	req0.Header.Set("Authorization", "Bearer "+opToken)
	if resp, err := srv.Client().Do(req0); err != nil || resp.StatusCode != 204 {
		t.Fatalf("delete = %v %v", resp, err)
	} else {
		_ = resp.Body.Close()
	}
	call(t, srv, "POST", "/v1/nodes/"+reg.NodeID+"/status", asNode(reg), `{"vmsComplete":true,"vms":[{"id":"`+vm.ID+`","state":"Pending"}]}`, nil)

	var g api.Goal
	if code := call(t, srv, "GET", "/v1/nodes/"+reg.NodeID+"/goal", asNode(reg), "", &g); code != 200 || len(g.VMs) != 1 || g.VMs[0].PackageDigest == "" || g.VMs[0].Settings["greeting"] != "hi" {
		t.Fatalf("goal = %d %+v", code, g)
	}
	status := `{"vmsComplete":true,"vms":[{"id":"` + vm.ID + `","state":"Running","interfaces":["lo"],"endpoint":"10.0.0.100:40000","usage":{"cpuSeconds":1.5,"memoryBytes":1000,"channelBytes":42}}]}`
	if code := call(t, srv, "POST", "/v1/nodes/"+reg.NodeID+"/status", asNode(reg), status, nil); code != 200 {
		t.Fatalf("status = %d", code)
	}
	var got api.VM
	call(t, srv, "GET", "/v1/vms/"+vm.ID, opToken, "", &got)
	if got.State != api.VMStateRunning || got.Endpoint != "10.0.0.100:40000" || got.Usage == nil || got.Usage.ChannelBytes != 42 {
		t.Errorf("vm after the host's report: %+v", got.VMStatus)
	}
	if code := call(t, srv, "DELETE", "/v1/images/web", opToken, "", &e); code != 409 || !strings.Contains(e.Message, "vm "+vm.ID) {
		t.Errorf("rm of a package in use = %d %q", code, e.Message)
	}
	if code := call(t, srv, "POST", "/v1/vms/"+vm.ID+"/reboot", opToken, "", &got); code != 200 || got.RebootGen != 1 {
		t.Errorf("reboot = %d %+v", code, got)
	}
	// Goals are read from the store's copies as they are (relaxed): a host
	// waits for its goal to move past the incarnation it has, as here.
	var g2 api.Goal
	call(t, srv, "GET", fmt.Sprintf("/v1/nodes/%s/goal?incarnation=%d&wait=10s", reg.NodeID, g.Incarnation), asNode(reg), "", &g2)
	if g2.Incarnation == g.Incarnation || g2.VMs[0].RebootGen != 1 {
		t.Errorf("the goal did not move with the reboot: %d → %d, %+v", g.Incarnation, g2.Incarnation, g2.VMs)
	}
	if code := call(t, srv, "POST", "/v1/vms/"+vm.ID+"/explode", opToken, "", &e); code != 404 {
		t.Errorf("unknown action = %d", code)
	}
	req, _ := http.NewRequest("DELETE", srv.URL+"/v1/vms/"+vm.ID, nil)
	req.Header.Set("Authorization", "Bearer "+opToken)
	resp, err := srv.Client().Do(req)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("delete = %v %v", resp, err)
	}
	resp.Body.Close()
	call(t, srv, "GET", "/v1/vms/"+vm.ID, opToken, "", &got)
	if got.Desired != api.VMDeleted {
		t.Errorf("after delete desired = %q", got.Desired)
	}
	// The host no longer has it: the fabric forgets it.
	call(t, srv, "POST", "/v1/nodes/"+reg.NodeID+"/status", asNode(reg), `{"vmsComplete":true}`, nil)
	if code := call(t, srv, "GET", "/v1/vms/"+vm.ID, opToken, "", &e); code != 404 {
		t.Errorf("vm after its host dropped it = %d, want 404", code)
	}
}
