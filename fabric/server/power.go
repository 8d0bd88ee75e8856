package server

import (
	"context"
	"net/http"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/bmc"
	"github.com/loomfabric/loom/fabric/store"
)

// Power is what the API needs to power nodes; *node.Registry has it.
type Power interface {
	SetBMC(ctx context.Context, id string, b *api.BMC) (api.Node, error)
	Power(ctx context.Context, id string, op bmc.Op, why string) (string, error)
}

// Credentials is what the API needs of the BMC credential store;
// *store.Store has it.
type Credentials interface {
	PutCredential(ctx context.Context, c api.Credential) error
	Credentials(ctx context.Context) ([]api.Credential, error)
	DeleteCredential(ctx context.Context, name string) error
}

func (a *apiServer) routePower(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v1/credentials/{name}", a.operator(a.putCredential))
	mux.HandleFunc("GET /v1/credentials", a.operator(a.listCredentials))
	mux.HandleFunc("DELETE /v1/credentials/{name}", a.operator(a.deleteCredential))
	mux.HandleFunc("PUT /v1/nodes/{id}/bmc", a.operator(a.putBMC))
	mux.HandleFunc("DELETE /v1/nodes/{id}/bmc", a.operator(a.deleteBMC))
	mux.HandleFunc("POST /v1/nodes/{id}/power", a.operator(a.power))
}

func (a *apiServer) putCredential(w http.ResponseWriter, r *http.Request) {
	var c api.Credential
	if err := decode(w, r, &c); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if c.Name == "" {
		c.Name = r.PathValue("name")
	}
	if c.Name != r.PathValue("name") {
		a.fail(w, r, http.StatusBadRequest, "name: %q differs from the URL's %q", c.Name, r.PathValue("name"))
		return
	}
	if err := c.Validate(); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if err := a.cfg.Credentials.PutCredential(r.Context(), c); err != nil {
		a.fail(w, r, http.StatusInternalServerError, "%v", err)
		return
	}
	c.Password = ""
	writeJSON(w, http.StatusOK, c)
}

func (a *apiServer) listCredentials(w http.ResponseWriter, r *http.Request) {
	cs, err := a.cfg.Credentials.Credentials(r.Context())
	a.result(w, r, cs, err)
}

func (a *apiServer) deleteCredential(w http.ResponseWriter, r *http.Request) {
	err := a.cfg.Credentials.DeleteCredential(r.Context(), r.PathValue("name"))
	if store.IsNotFound(err) {
		a.fail(w, r, http.StatusNotFound, "%v", err)
		return
	}
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *apiServer) putBMC(w http.ResponseWriter, r *http.Request) {
	var b api.BMC
	if err := decode(w, r, &b); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	b.Power, b.LastAction = "", ""
	n, err := a.cfg.Power.SetBMC(r.Context(), r.PathValue("id"), &b)
	a.result(w, r, n, err)
}

func (a *apiServer) deleteBMC(w http.ResponseWriter, r *http.Request) {
	n, err := a.cfg.Power.SetBMC(r.Context(), r.PathValue("id"), nil)
	a.result(w, r, n, err)
}

// powerOp reads a PowerRequest body; false means it answered 400.
func (a *apiServer) powerOp(w http.ResponseWriter, r *http.Request) (bmc.Op, bool) {
	var req api.PowerRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return "", false
	}
	op, err := bmc.ParseOp(req.Op)
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return "", false
	}
	return op, true
}

func (a *apiServer) power(w http.ResponseWriter, r *http.Request) {
	op, ok := a.powerOp(w, r)
	if !ok {
		return
	}
	state, err := a.cfg.Power.Power(r.Context(), r.PathValue("id"), op, "operator request")
	a.result(w, r, api.PowerResult{Power: state}, err)
}
