package ui

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/loomfabric/loom/fabric/api"
)

// Tile is a node as the racks grid draws it: what changes its colour, its
// progress bar or its label, and nothing that moves with every heartbeat.
type Tile struct {
	ID      string    `json:"id"`
	Phase   api.Phase `json:"phase"`
	Rack    string    `json:"rack,omitempty"`
	Slot    string    `json:"slot,omitempty"`
	MAC     string    `json:"mac"`
	IP      string    `json:"ip,omitempty"`
	Mode    api.Mode  `json:"mode,omitempty"`
	Profile string    `json:"profile,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Model   string    `json:"model,omitempty"`
	Power   string    `json:"power,omitempty"`
	// Bytes of Total written, at Rate bytes a second (imaging).
	Bytes uint64  `json:"bytes,omitempty"`
	Total uint64  `json:"total,omitempty"`
	Rate  float64 `json:"rate,omitempty"`
}

// TileOf is n's tile.
func TileOf(n api.Node) Tile {
	t := Tile{ID: n.ID, Phase: n.Phase, Rack: n.Rack, Slot: n.Slot, MAC: n.MAC, IP: n.IP, Mode: n.Mode, Profile: n.Profile, Reason: n.Reason}
	if len(t.Reason) > 200 {
		t.Reason = t.Reason[:200] + "…"
	}
	if inv := n.Inventory; inv != nil {
		t.Model = inv.DMI.Product
	}
	if n.BMC != nil {
		t.Power = n.BMC.Power
	}
	if p := n.Progress; p != nil && n.Phase == api.PhaseImaging {
		t.Bytes, t.Total, t.Rate = p.Bytes, p.Total, p.BytesPerS
	}
	return t
}

// Change is one message of the stream after the first: tiles new or
// changed, and nodes gone.
type Change struct {
	Set  []Tile   `json:"set,omitempty"`
	Gone []string `json:"gone,omitempty"`
}

// Diff is what moves the grid from before to now (both by node id).
func Diff(before, now map[string]Tile) Change {
	var c Change
	for id, t := range now {
		if b, ok := before[id]; !ok || b != t {
			c.Set = append(c.Set, t)
		}
	}
	for id := range before {
		if _, ok := now[id]; !ok {
			c.Gone = append(c.Gone, id)
		}
	}
	slices.SortFunc(c.Set, func(a, b Tile) int { return cmp.Compare(a.ID, b.ID) })
	slices.Sort(c.Gone)
	return c
}

// stream is the live grid (server-sent events): "nodes", every tile, then
// a "change" whenever tiles change, a comment every 15 s to keep proxies
// from closing it, and "logout" (then the end) when the session's token
// is revoked or the session expires.
func (d *dash) stream(w http.ResponseWriter, r *http.Request) {
	s, _, _, ok := d.current(r)
	if !ok {
		fail(w, http.StatusUnauthorized, "not logged in (or the session's token was revoked, or it expired)")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		fail(w, http.StatusInternalServerError, "streaming is not supported on this connection")
		return
	}
	ctx := r.Context()
	nodes, err := d.cfg.Nodes(ctx)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "listing nodes: %v", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	last := tiles(nodes)
	all := make([]Tile, 0, len(last))
	for _, t := range last {
		all = append(all, t)
	}
	slices.SortFunc(all, func(a, b Tile) int { return cmp.Compare(a.ID, b.ID) })
	if _, err := fmt.Fprint(w, "retry: 2000\n"); err != nil || !send("nodes", all) {
		return
	}
	tick := time.NewTicker(d.cfg.Tick)
	defer tick.Stop()
	quiet, checked := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		expired := time.Now().Unix() >= s.Expires
		if expired || time.Since(checked) >= 10*time.Second {
			checked = time.Now()
			if _, _, ok := d.cfg.Check(ctx, s.Token); expired || !ok {
				send("logout", api.Error{Message: "the session ended (expired, or its token was revoked)"})
				return
			}
		}
		nodes, err := d.cfg.Nodes(ctx)
		if err != nil {
			d.cfg.Log.Warn("ui: stream: listing nodes", "err", err)
			continue // the store is between leaders, say: try again next tick
		}
		now := tiles(nodes)
		if c := Diff(last, now); len(c.Set)+len(c.Gone) > 0 {
			if !send("change", c) {
				return
			}
			last, quiet = now, time.Now()
		} else if time.Since(quiet) >= 15*time.Second {
			if _, err := fmt.Fprint(w, ": still here\n\n"); err != nil {
				return
			}
			fl.Flush()
			quiet = time.Now()
		}
	}
}

func tiles(nodes []api.Node) map[string]Tile {
	m := make(map[string]Tile, len(nodes))
	for _, n := range nodes {
		m[n.ID] = TileOf(n)
	}
	return m
}
