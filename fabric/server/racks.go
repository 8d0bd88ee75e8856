package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/bmc"
	"github.com/loomfabric/loom/fabric/rack"
)

// Racks is what the API needs for rack enrollment; *node.Registry has it.
type Racks interface {
	Import(ctx context.Context, entries []api.RackEntry) (api.RackImport, error)
	Racks(ctx context.Context) ([]api.RackSummary, error)
	PowerRack(ctx context.Context, rack string, op bmc.Op) (api.RackPower, error)
}

func (a *apiServer) routeRacks(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/racks/import", a.operator(a.importRack))
	mux.HandleFunc("GET /v1/racks", a.operator(a.listRacks))
	mux.HandleFunc("POST /v1/racks/{rack}/power", a.operator(a.powerRack))
}

func (a *apiServer) importRack(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			a.fail(w, r, http.StatusRequestEntityTooLarge, "rack file larger than %d bytes", api.MaxBodyBytes)
			return
		}
		a.fail(w, r, http.StatusBadRequest, "reading the rack file: %v", err)
		return
	}
	entries, err := rack.Parse(bytes.NewReader(body))
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, "nothing imported: %v", err)
		return
	}
	res, err := a.cfg.Racks.Import(r.Context(), entries)
	a.result(w, r, res, err)
}

func (a *apiServer) listRacks(w http.ResponseWriter, r *http.Request) {
	racks, err := a.cfg.Racks.Racks(r.Context())
	if racks == nil {
		racks = []api.RackSummary{}
	}
	a.result(w, r, racks, err)
}

func (a *apiServer) powerRack(w http.ResponseWriter, r *http.Request) {
	op, ok := a.powerOp(w, r)
	if !ok {
		return
	}
	if !api.ValidName(r.PathValue("rack")) {
		a.fail(w, r, http.StatusBadRequest, "rack %q: not a rack name", r.PathValue("rack"))
		return
	}
	res, err := a.cfg.Racks.PowerRack(r.Context(), r.PathValue("rack"), op)
	a.result(w, r, res, err)
}

// filterRack keeps the nodes of one rack ("" keeps all).
func filterRack(nodes []api.Node, rack string) []api.Node {
	if rack == "" {
		return nodes
	}
	out := []api.Node{}
	for _, n := range nodes {
		if n.Rack == rack {
			out = append(out, n)
		}
	}
	return out
}
