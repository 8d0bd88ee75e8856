package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// ErrRefused wraps a request the fabric will not carry out as asked
// (409 Conflict), such as a replica removing its own member.
var ErrRefused = errors.New("refused")

// Cluster is the replicated control plane's membership (package loomd).
type Cluster interface {
	// Status lists the members, each asked of its own replica with the
	// caller's token.
	Status(ctx context.Context, token string) (api.ClusterStatus, error)
	Self(ctx context.Context) (api.MemberStatus, error)
	Add(ctx context.Context, m api.MemberAdd) (api.MemberAdded, error)
	Remove(ctx context.Context, name string) error
}

func (a *apiServer) routeCluster(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/cluster", a.operator(func(w http.ResponseWriter, r *http.Request) {
		s, err := a.cfg.Cluster.Status(r.Context(), bearer(r))
		if err != nil {
			a.fail(w, r, http.StatusInternalServerError, "cluster status: %v", err)
			return
		}
		writeJSON(w, http.StatusOK, s)
	}))
	mux.HandleFunc("GET /v1/cluster/self", a.operator(func(w http.ResponseWriter, r *http.Request) {
		s, err := a.cfg.Cluster.Self(r.Context())
		if err != nil {
			a.fail(w, r, http.StatusInternalServerError, "member status: %v", err)
			return
		}
		writeJSON(w, http.StatusOK, s)
	}))
	mux.HandleFunc("POST /v1/cluster/members", a.admin(func(w http.ResponseWriter, r *http.Request) {
		var m api.MemberAdd
		if err := decode(w, r, &m); err != nil {
			a.fail(w, r, http.StatusBadRequest, "%v", err)
			return
		}
		if err := errors.Join(store.ValidName(m.Name), store.ValidPeerURL(m.PeerURL)); err != nil {
			a.fail(w, r, http.StatusBadRequest, "%v", err)
			return
		}
		added, err := a.cfg.Cluster.Add(r.Context(), m)
		switch {
		case errors.Is(err, store.ErrExists):
			a.fail(w, r, http.StatusConflict, "%v", err)
		case err != nil:
			a.fail(w, r, http.StatusInternalServerError, "%v", err)
		default:
			writeJSON(w, http.StatusOK, added)
		}
	}))
	mux.HandleFunc("DELETE /v1/cluster/members/{name}", a.admin(func(w http.ResponseWriter, r *http.Request) {
		err := a.cfg.Cluster.Remove(r.Context(), r.PathValue("name"))
		switch {
		case store.IsNotFound(err):
			a.fail(w, r, http.StatusNotFound, "%v", err)
		case errors.Is(err, ErrRefused):
			a.fail(w, r, http.StatusConflict, "%v", err)
		case err != nil:
			a.fail(w, r, http.StatusInternalServerError, "%v", err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
}
