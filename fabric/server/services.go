package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/service"
	"github.com/loomfabric/loom/fabric/store"
)

// Services is what the API needs of the service model (service.Manager).
type Services interface {
	Deploy(ctx context.Context, manifest []byte) (api.Service, error)
	Services(ctx context.Context) ([]api.Service, error)
	Service(ctx context.Context, name string) (api.Service, error)
	Scale(ctx context.Context, name string, req api.ScaleRequest) (api.Service, error)
	Delete(ctx context.Context, name string) error
	Instances(ctx context.Context, service string) ([]api.Instance, error)
	Upgrade(ctx context.Context, name string, req api.UpgradeRequest) (api.Service, error)
	Walk(ctx context.Context, name string) (api.Service, error)
	Usage(ctx context.Context, since time.Time, service string) ([]api.UsageRecord, error)
}

func (a *apiServer) routeServices(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/services", a.operator(a.deployService))
	mux.HandleFunc("GET /v1/services", a.operator(a.listServices))
	mux.HandleFunc("GET /v1/services/{name}", a.operator(a.getService))
	mux.HandleFunc("POST /v1/services/{name}/scale", a.operator(a.scaleService))
	mux.HandleFunc("DELETE /v1/services/{name}", a.operator(a.deleteService))
	mux.HandleFunc("POST /v1/services/{name}/upgrade", a.operator(a.upgradeService))
	mux.HandleFunc("POST /v1/services/{name}/walk", a.operator(a.walkService))
	mux.HandleFunc("GET /v1/instances", a.operator(a.listInstances))
	mux.HandleFunc("GET /v1/usage", a.operator(a.usage))
}

func (a *apiServer) deployService(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, service.MaxManifest))
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, "reading the manifest: %v", err)
		return
	}
	s, err := a.cfg.Services.Deploy(r.Context(), b)
	if err != nil {
		a.serviceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s)
}

func (a *apiServer) listServices(w http.ResponseWriter, r *http.Request) {
	ss, err := a.cfg.Services.Services(r.Context())
	if ss == nil {
		ss = []api.Service{}
	}
	a.serviceResult(w, r, ss, err)
}

func (a *apiServer) getService(w http.ResponseWriter, r *http.Request) {
	s, err := a.cfg.Services.Service(r.Context(), r.PathValue("name"))
	a.serviceResult(w, r, s, err)
}

func (a *apiServer) scaleService(w http.ResponseWriter, r *http.Request) {
	var req api.ScaleRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	s, err := a.cfg.Services.Scale(r.Context(), r.PathValue("name"), req)
	a.serviceResult(w, r, s, err)
}

func (a *apiServer) upgradeService(w http.ResponseWriter, r *http.Request) {
	var req api.UpgradeRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	s, err := a.cfg.Services.Upgrade(r.Context(), r.PathValue("name"), req)
	if err != nil {
		a.serviceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, s)
}

func (a *apiServer) walkService(w http.ResponseWriter, r *http.Request) {
	s, err := a.cfg.Services.Walk(r.Context(), r.PathValue("name"))
	a.serviceResult(w, r, s, err)
}

func (a *apiServer) deleteService(w http.ResponseWriter, r *http.Request) {
	if err := a.cfg.Services.Delete(r.Context(), r.PathValue("name")); err != nil {
		a.serviceError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *apiServer) listInstances(w http.ResponseWriter, r *http.Request) {
	ins, err := a.cfg.Services.Instances(r.Context(), r.URL.Query().Get("service"))
	a.serviceResult(w, r, ins, err)
}

func (a *apiServer) usage(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if q := r.URL.Query().Get("since"); q != "" {
		t, err := time.Parse(time.RFC3339, q)
		if err != nil {
			a.fail(w, r, http.StatusBadRequest, "since: %q: want a time such as 2026-11-24T12:00:00Z", q)
			return
		}
		since = t
	}
	us, err := a.cfg.Services.Usage(r.Context(), since, r.URL.Query().Get("service"))
	a.serviceResult(w, r, us, err)
}

func (a *apiServer) serviceResult(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		a.serviceError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *apiServer) serviceError(w http.ResponseWriter, r *http.Request, err error) {
	var ps service.Problems
	switch {
	case errors.As(err, &ps), errors.Is(err, service.ErrBadRequest):
		a.fail(w, r, http.StatusBadRequest, "%v", err)
	case errors.Is(err, store.ErrExists):
		a.fail(w, r, http.StatusConflict, "%v", err)
	case store.IsNotFound(err):
		a.fail(w, r, http.StatusNotFound, "%v", err)
	default:
		a.fail(w, r, http.StatusInternalServerError, "%v", fmt.Errorf("services: %w", err))
	}
}
