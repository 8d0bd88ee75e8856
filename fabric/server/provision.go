package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/node"
	"github.com/loomfabric/loom/fabric/store"
)

// Profiles is what the API needs of the profile store.
type Profiles interface {
	PutProfile(ctx context.Context, p api.Profile) error
	Profile(ctx context.Context, name string) (api.Profile, error)
	Profiles(ctx context.Context) ([]api.Profile, error)
	DeleteProfile(ctx context.Context, name string) error
	Image(ctx context.Context, name string) (api.Manifest, error)
}

// MaxGoalWait bounds ?wait= on the goal long-poll.
const MaxGoalWait = 60 * time.Second

// goal is GET /v1/nodes/{id}/goal?incarnation=N&wait=30s: 200 with the
// goal when its incarnation is not N, else wait up to `wait` for a change
// and answer 304 if none came.
func (a *apiServer) goal(w http.ResponseWriter, r *http.Request) {
	// Goals read the store's copies as they are (store.Relaxed): the wait
	// below ends when the copy moves.
	r = r.WithContext(store.Relaxed(r.Context()))
	id, ok := a.nodeAuth(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	have := int64(-1)
	if s := q.Get("incarnation"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			a.fail(w, r, http.StatusBadRequest, "incarnation %q: not a number", s)
			return
		}
		have = v
	}
	wait := time.Duration(0)
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			a.fail(w, r, http.StatusBadRequest, "wait %q: want a duration like 30s", s)
			return
		}
		wait = min(d, MaxGoalWait)
	}
	deadline := time.Now().Add(wait)
	for {
		g, err := a.cfg.Registry.Goal(r.Context(), id)
		if err != nil {
			a.fail(w, r, http.StatusInternalServerError, "goal of %s: %v", id, err)
			return
		}
		if g.Incarnation != have {
			writeJSON(w, http.StatusOK, g)
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), left)
		err = a.cfg.Registry.WaitGoal(ctx, id, g.Incarnation)
		cancel()
		if r.Context().Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			a.fail(w, r, http.StatusInternalServerError, "watching goal of %s: %v", id, err)
			return
		}
	}
}

func (a *apiServer) provision(w http.ResponseWriter, r *http.Request) {
	var req api.ProvisionRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	n, err := a.cfg.Registry.Provision(r.Context(), r.PathValue("id"), req.Profile)
	a.nodeResult(w, r, n, err)
}

func (a *apiServer) reprovision(w http.ResponseWriter, r *http.Request) {
	n, err := a.cfg.Registry.Reprovision(r.Context(), r.PathValue("id"))
	a.nodeResult(w, r, n, err)
}

// Decommissioner is the registry's decommissioning (*node.Registry has it).
type Decommissioner interface {
	Decommission(ctx context.Context, id string) (api.Node, error)
}

func (a *apiServer) decommission(w http.ResponseWriter, r *http.Request) {
	n, err := a.cfg.Registry.(Decommissioner).Decommission(r.Context(), r.PathValue("id"))
	a.nodeResult(w, r, n, err)
}

// Deleter is the registry's node deletion (*node.Registry has it).
type Deleter interface {
	Delete(ctx context.Context, id string) error
}

// deleteNode forgets a node and revokes its certificate.
func (a *apiServer) deleteNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.cfg.Registry.(Deleter).Delete(r.Context(), id); err != nil {
		a.result(w, r, nil, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// nodeResult answers with n, or with err mapped to 404, 409 or 500.
func (a *apiServer) nodeResult(w http.ResponseWriter, r *http.Request, n api.Node, err error) {
	a.result(w, r, n, err)
}

// result answers with v, or with err mapped to 404 (not found), 409
// (conflict) or 500.
func (a *apiServer) result(w http.ResponseWriter, r *http.Request, v any, err error) {
	switch {
	case store.IsNotFound(err):
		a.fail(w, r, http.StatusNotFound, "%v", err)
	case errors.Is(err, node.ErrConflict):
		a.fail(w, r, http.StatusConflict, "%v", err)
	case errors.Is(err, node.ErrInvalid):
		a.fail(w, r, http.StatusBadRequest, "%v", err)
	case errors.Is(err, node.ErrBMC):
		a.fail(w, r, http.StatusBadGateway, "%v", err)
	case err != nil:
		a.fail(w, r, http.StatusInternalServerError, "%v", err)
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

func (a *apiServer) routeProfiles(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v1/profiles/{name}", a.operator(a.putProfile))
	mux.HandleFunc("GET /v1/profiles", a.operator(a.listProfiles))
	mux.HandleFunc("GET /v1/profiles/{name}", a.operator(a.getProfile))
	mux.HandleFunc("DELETE /v1/profiles/{name}", a.operator(a.deleteProfile))
}

func (a *apiServer) putProfile(w http.ResponseWriter, r *http.Request) {
	var p api.Profile
	if err := decode(w, r, &p); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if p.Name == "" {
		p.Name = r.PathValue("name")
	}
	if p.Name != r.PathValue("name") {
		a.fail(w, r, http.StatusBadRequest, "name: %q differs from the URL's %q", p.Name, r.PathValue("name"))
		return
	}
	p.Default()
	if err := p.Validate(); err != nil {
		a.fail(w, r, http.StatusBadRequest, "profile %s: %v", p.Name, err)
		return
	}
	if _, err := a.cfg.Profiles.Image(r.Context(), p.Image); err != nil {
		a.fail(w, r, http.StatusBadRequest, "profile %s: image: %q: %v", p.Name, p.Image, err)
		return
	}
	if err := a.cfg.Profiles.PutProfile(r.Context(), p); err != nil {
		a.fail(w, r, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (a *apiServer) listProfiles(w http.ResponseWriter, r *http.Request) {
	ps, err := a.cfg.Profiles.Profiles(r.Context())
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, ps)
}

func (a *apiServer) getProfile(w http.ResponseWriter, r *http.Request) {
	p, err := a.cfg.Profiles.Profile(r.Context(), r.PathValue("name"))
	if store.IsNotFound(err) {
		a.fail(w, r, http.StatusNotFound, "profile %q not found", r.PathValue("name"))
		return
	}
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (a *apiServer) deleteProfile(w http.ResponseWriter, r *http.Request) {
	err := a.cfg.Profiles.DeleteProfile(r.Context(), r.PathValue("name"))
	if store.IsNotFound(err) {
		a.fail(w, r, http.StatusNotFound, "profile %q not found", r.PathValue("name"))
		return
	}
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
