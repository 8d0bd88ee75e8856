package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/service"
	"github.com/loomfabric/loom/fabric/store"
)

// Queues is what the API needs of the services' queues (service.Queues).
type Queues interface {
	Do(ctx context.Context, node, vm string, req api.QueueRequest) (api.QueueReply, error)
	List(ctx context.Context, svc string) ([]api.QueueInfo, error)
}

func (a *apiServer) routeQueues(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/nodes/{id}/vms/{vm}/queue", a.queueOp)
	mux.HandleFunc("GET /v1/services/{name}/queues", a.operator(a.listQueues))
}

// queueOp is a host calling on behalf of one of its guests.
func (a *apiServer) queueOp(w http.ResponseWriter, r *http.Request) {
	id, ok := a.nodeAuth(w, r)
	if !ok {
		return
	}
	var req api.QueueRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	rep, err := a.cfg.Queues.Do(r.Context(), id, r.PathValue("vm"), req)
	if err != nil {
		a.queueError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (a *apiServer) listQueues(w http.ResponseWriter, r *http.Request) {
	qs, err := a.cfg.Queues.List(r.Context(), r.PathValue("name"))
	if err != nil {
		a.queueError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, qs)
}

func (a *apiServer) queueError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, service.ErrForbidden):
		a.fail(w, r, http.StatusForbidden, "%v", err)
	case errors.Is(err, store.ErrQueueFull):
		a.fail(w, r, http.StatusTooManyRequests, "%v", err)
	case errors.Is(err, store.ErrStaleReceipt):
		a.fail(w, r, http.StatusConflict, "%v", err)
	default:
		a.serviceError(w, r, err)
	}
}
