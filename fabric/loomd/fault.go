package loomd

import (
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
)

// Faults injects failures so tests can prove recovery. loomd's main sets
// them only from the LOOM_FAULT_* environment (see cmd/loomd).
type Faults struct {
	// CutBlobs: the first CutBlobs image-blob responses larger than
	// 1 MiB are cut off halfway (the connection is dropped).
	CutBlobs int32
	cut      atomic.Int32
}

func (f *Faults) wrap(h http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/blob") && f.cut.Load() < f.CutBlobs {
			w = &cutWriter{ResponseWriter: w, f: f, log: log}
		}
		h.ServeHTTP(w, r)
	})
}

type cutWriter struct {
	http.ResponseWriter
	f       *Faults
	log     *slog.Logger
	written int64
	limit   int64
}

func (c *cutWriter) WriteHeader(code int) {
	c.ResponseWriter.WriteHeader(code)
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if c.limit == 0 {
		c.limit = -1
		if n := c.Header().Get("Content-Length"); n != "" {
			var v int64
			for _, ch := range n {
				v = v*10 + int64(ch-'0')
			}
			if v > 1<<20 && c.f.cut.Add(1) <= c.f.CutBlobs {
				c.limit = v / 2
			}
		}
	}
	if c.limit > 0 && c.written+int64(len(p)) > c.limit {
		_, _ = c.ResponseWriter.Write(p[:c.limit-c.written]) // the transfer is cut next either way
		c.log.Warn("fault injection: cutting an image transfer", "at", c.limit)
		panic(http.ErrAbortHandler)
	}
	c.written += int64(len(p))
	return c.ResponseWriter.Write(p)
}
