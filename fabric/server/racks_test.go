package server

import (
	"strings"
	"testing"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
)

// TestRacksAPI: a CSV goes in over HTTP; a bad one is a 400 naming its
// line and field with nothing imported; a good one enrolls the nodes,
// which GET /v1/nodes?rack= and /v1/racks then show.
func TestRacksAPI(t *testing.T) {
	srv, _ := newAPIWith(t, func(c *Config, reg *node.Registry) { c.Racks = reg })
	t.Cleanup(srv.Close)

	var e api.Error
	bad := "mac,rack,slot\n52:54:00:00:00:01,r1,1\n52:54:00:00:00:0g,r1,2\n"
	if code := call(t, srv, "POST", "/v1/racks/import", opToken, bad, &e); code != 400 || !strings.Contains(e.Message, "line 3, field mac") {
		t.Errorf("bad CSV: %d %q, want 400 naming line 3, field mac", code, e.Message)
	}
	if code := call(t, srv, "POST", "/v1/racks/import", enrollToken, bad, &e); code != 401 {
		t.Errorf("import with the enrollment token: %d, want 401", code)
	}
	var nodes []api.Node
	call(t, srv, "GET", "/v1/nodes", opToken, "", &nodes)
	if len(nodes) != 0 {
		t.Fatalf("a refused import left %d nodes", len(nodes))
	}
	var res api.RackImport
	good := "mac,rack,slot\n52:54:00:00:00:01,r1,1\n52:54:00:00:00:02,r1,2\n52:54:00:00:00:03,r2,1\n"
	if code := call(t, srv, "POST", "/v1/racks/import", opToken, good, &res); code != 200 || len(res.Created) != 3 {
		t.Fatalf("import: %d %+v", code, res)
	}
	call(t, srv, "GET", "/v1/nodes?rack=r1", opToken, "", &nodes)
	if len(nodes) != 2 || nodes[0].Phase != api.PhaseEnrolled || nodes[0].Rack != "r1" {
		t.Errorf("rack r1's nodes: %+v", nodes)
	}
	var racks []api.RackSummary
	if call(t, srv, "GET", "/v1/racks", opToken, "", &racks); len(racks) != 2 || racks[0].Rack != "r1" || racks[0].Nodes != 2 || racks[1].Phases[api.PhaseEnrolled] != 1 {
		t.Errorf("racks: %+v", racks)
	}
	if code := call(t, srv, "POST", "/v1/racks/r1/power", opToken, `{"op":"explode"}`, &e); code != 400 {
		t.Errorf("unknown op: %d", code)
	}
	if code := call(t, srv, "POST", "/v1/racks/r9/power", opToken, `{"op":"on"}`, &e); code != 404 {
		t.Errorf("unknown rack: %d %q", code, e.Message)
	}
	var pw api.RackPower
	if code := call(t, srv, "POST", "/v1/racks/r1/power", opToken, `{"op":"status"}`, &pw); code != 200 || len(pw.Nodes) != 2 || pw.Nodes[0].Error != "no BMC" {
		t.Errorf("status of a rack without BMCs: %d %+v", code, pw)
	}
}
