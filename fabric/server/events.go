package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/store"
)

// Events is the fabric's history (*store.Store has it).
type Events interface {
	Events(ctx context.Context, f store.EventFilter) ([]api.Event, int64, error)
	WatchEvents(ctx context.Context, rev int64, f store.EventFilter, fn func(api.Event) error) error
}

// listEvents answers GET /v1/events[?object=][&since=][&limit=][&follow=].
func (a *apiServer) listEvents(w http.ResponseWriter, r *http.Request) {
	since, limit, ok := a.sinceLimit(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	f := store.EventFilter{Object: q.Get("object"), Since: since, Limit: limit}
	follow := false
	if s := q.Get("follow"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			a.fail(w, r, http.StatusBadRequest, "follow=%q: want true or false", s)
			return
		}
		follow = b
	}
	evs, rev, err := a.cfg.Events.Events(r.Context(), f)
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "reading events: %v", err)
		return
	}
	if !follow {
		if evs == nil {
			evs = []api.Event{}
		}
		writeJSON(w, http.StatusOK, evs)
		return
	}
	// Newline-separated events, the stored ones first, then each as it
	// is recorded, until the client leaves.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	send := func(e api.Event) error {
		if err := enc.Encode(e); err != nil {
			return err
		}
		return rc.Flush()
	}
	for _, e := range evs {
		if send(e) != nil {
			return
		}
	}
	if err := rc.Flush(); err != nil {
		return
	}
	_ = a.cfg.Events.WatchEvents(r.Context(), rev, f, send) // ends when the client leaves; nothing to tell it then
}
