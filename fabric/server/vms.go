package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
	"github.com/loomfabric/loom/fabric/vms"
)

// VMs is what the API needs of the VM registry.
type VMs interface {
	CreateVM(ctx context.Context, req api.VMRequest) (api.VM, error)
	VMs(ctx context.Context) ([]api.VM, error)
	VM(ctx context.Context, id string) (api.VM, error)
	VMAction(ctx context.Context, id string, action api.VMAction) (api.VM, error)
}

func (a *apiServer) routeVMs(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/vms", a.operator(a.createVM))
	mux.HandleFunc("GET /v1/vms", a.operator(a.listVMs))
	mux.HandleFunc("GET /v1/vms/{id}", a.operator(a.getVM))
	mux.HandleFunc("POST /v1/vms/{id}/{action}", a.operator(a.vmAction))
	mux.HandleFunc("DELETE /v1/vms/{id}", a.operator(a.deleteVM))
}

func (a *apiServer) createVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	req.Default()
	if err := req.Validate(); err != nil {
		a.fail(w, r, http.StatusBadRequest, "vm: %v", err)
		return
	}
	vm, err := a.cfg.VMs.CreateVM(r.Context(), req)
	switch {
	case errors.Is(err, vms.ErrNoCapacity), errors.Is(err, store.ErrExists):
		a.fail(w, r, http.StatusConflict, "%v", err)
	case store.IsNotFound(err):
		a.fail(w, r, http.StatusBadRequest, "vm: %v", err)
	case err != nil:
		a.fail(w, r, http.StatusInternalServerError, "creating vm: %v", err)
	default:
		writeJSON(w, http.StatusCreated, vm)
	}
}

func (a *apiServer) listVMs(w http.ResponseWriter, r *http.Request) {
	vms, err := a.cfg.VMs.VMs(r.Context())
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "listing vms: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, vms)
}

func (a *apiServer) getVM(w http.ResponseWriter, r *http.Request) {
	vm, err := a.cfg.VMs.VM(r.Context(), r.PathValue("id"))
	a.vmResult(w, r, vm, err)
}

func (a *apiServer) vmAction(w http.ResponseWriter, r *http.Request) {
	action := api.VMAction(r.PathValue("action"))
	switch action {
	case api.VMStart, api.VMStop, api.VMReboot:
	default:
		a.fail(w, r, http.StatusNotFound, "unknown vm action %q (want start, stop or reboot)", action)
		return
	}
	vm, err := a.cfg.VMs.VMAction(r.Context(), r.PathValue("id"), action)
	a.vmResult(w, r, vm, err)
}

func (a *apiServer) deleteVM(w http.ResponseWriter, r *http.Request) {
	_, err := a.cfg.VMs.VMAction(r.Context(), r.PathValue("id"), api.VMDelete)
	if err == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	a.vmResult(w, r, api.VM{}, err)
}

func (a *apiServer) vmResult(w http.ResponseWriter, r *http.Request, vm api.VM, err error) {
	a.result(w, r, vm, err)
}
