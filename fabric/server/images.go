package server

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"time"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/image"
	"github.com/loomfabric/loom/fabric/store"
)

// Images is what the API needs of the image library.
type Images interface {
	Add(ctx context.Context, name string, r io.Reader, bmap []api.Range) (api.Manifest, error)
	Get(ctx context.Context, name string) (api.Manifest, error)
	List(ctx context.Context) ([]api.Manifest, error)
	Remove(ctx context.Context, name string) error
	// OpenBlob opens an image's bytes (fetched from another replica if
	// this one lacks them).
	OpenBlob(ctx context.Context, m api.Manifest) (*os.File, error)
}

func (a *apiServer) routeImages(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/images", a.operator(a.addImage))
	mux.HandleFunc("GET /v1/images", a.operator(a.listImages))
	mux.HandleFunc("GET /v1/images/{name}", a.reader(a.getImage))
	mux.HandleFunc("GET /v1/images/{name}/blob", a.reader(a.imageBlob))
	mux.HandleFunc("DELETE /v1/images/{name}", a.operator(a.removeImage))
}

// reader admits the operator, nodes (their certificates) and machines
// holding the enrollment token (agents fetch manifests and blobs).
func (a *apiServer) reader(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tokenOK(bearer(r), a.cfg.EnrollToken) || a.isNode(r) {
			h(w, r)
			return
		}
		a.operator(h)(w, r)
	}
}

// addImage takes the image as the body (application/octet-stream), or as
// multipart/form-data with an optional "bmap" part before the "image" part.
func (a *apiServer) addImage(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if err := image.ValidName(name); err != nil {
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	body := io.Reader(r.Body)
	var bmap []api.Range
	if mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
		mr, err := r.MultipartReader()
		if err != nil {
			a.fail(w, r, http.StatusBadRequest, "multipart body: %v", err)
			return
		}
		_ = params
		for body == io.Reader(r.Body) {
			p, err := mr.NextPart()
			if err != nil {
				a.fail(w, r, http.StatusBadRequest, "multipart body: no \"image\" part (%v)", err)
				return
			}
			switch p.FormName() {
			case "bmap":
				_, ranges, err := image.ParseBmap(p)
				if err != nil {
					a.fail(w, r, http.StatusBadRequest, "%v", err)
					return
				}
				bmap = ranges
				if bmap == nil {
					bmap = []api.Range{}
				}
			case "image":
				body = p
			default:
				a.fail(w, r, http.StatusBadRequest, "multipart body: unknown part %q (want bmap, image)", p.FormName())
				return
			}
		}
	}
	m, err := a.cfg.Images.Add(r.Context(), name, body, bmap)
	switch {
	case errors.Is(err, store.ErrExists):
		a.fail(w, r, http.StatusConflict, "%v", err)
		return
	case err != nil:
		a.fail(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	a.log.Info("image added", "name", m.Name, "digest", m.Digest, "format", m.Format, "size", m.Size, "data", m.DataBytes, "ranges", len(m.Ranges))
	m.Ranges = nil
	writeJSON(w, http.StatusOK, m)
}

func (a *apiServer) listImages(w http.ResponseWriter, r *http.Request) {
	ms, err := a.cfg.Images.List(r.Context())
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "listing images: %v", err)
		return
	}
	for i := range ms {
		ms[i].Ranges = nil
	}
	writeJSON(w, http.StatusOK, ms)
}

func (a *apiServer) image(w http.ResponseWriter, r *http.Request) (api.Manifest, bool) {
	name := r.PathValue("name")
	m, err := a.cfg.Images.Get(r.Context(), name)
	if store.IsNotFound(err) {
		a.fail(w, r, http.StatusNotFound, "image %q not found", name)
		return m, false
	}
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "reading image %q: %v", name, err)
		return m, false
	}
	return m, true
}

func (a *apiServer) getImage(w http.ResponseWriter, r *http.Request) {
	if m, ok := a.image(w, r); ok {
		writeJSON(w, http.StatusOK, m)
	}
}

// imageBlob serves the stored bytes with Range support.
func (a *apiServer) imageBlob(w http.ResponseWriter, r *http.Request) {
	m, ok := a.image(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	if r.Header.Get(api.PeerFetchHeader) != "" {
		ctx = image.LocalOnly(ctx)
	}
	f, err := a.cfg.Images.OpenBlob(ctx, m)
	if err != nil {
		a.fail(w, r, http.StatusInternalServerError, "image %s: blob: %v", m.Name, err)
		return
	}
	defer func() { _ = f.Close() }() // read only
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+m.Digest+`"`)
	http.ServeContent(w, r, "", fileTime(f), f)
}

func (a *apiServer) removeImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	err := a.cfg.Images.Remove(r.Context(), name)
	switch {
	case store.IsNotFound(err):
		a.fail(w, r, http.StatusNotFound, "image %q not found", name)
	case errors.Is(err, image.ErrInUse):
		a.fail(w, r, http.StatusConflict, "%v", err)
	case err != nil:
		a.fail(w, r, http.StatusInternalServerError, "removing image %q: %v", name, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func fileTime(f *os.File) (t time.Time) {
	if st, err := f.Stat(); err == nil {
		t = st.ModTime()
	}
	return t
}
