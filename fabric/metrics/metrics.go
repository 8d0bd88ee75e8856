// Package metrics is loomd's Prometheus exposition (/metrics).
//
// What moves with traffic is counted as it happens (API requests, imaging
// outcomes, store requests); what is a state (nodes by phase, VMs by
// state, lease pools, the store's size, the DHCP server's counters, each
// guest's usage as its host pushed it with the heartbeat) is read when
// Prometheus scrapes. Names follow Prometheus' conventions: the unit in
// the name, counters end in _total, and every label has a bounded set of
// values (routes are the API's patterns, not paths; nodes and VMs are as
// many as the fabric has).
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loomfabric/loom/fabric/api"
	"github.com/loomfabric/loom/fabric/dhcp"
)

// Sources are where the scrape-time figures come from; any may be nil.
type Sources struct {
	// DHCP is the DHCP server's counters and pools.
	DHCP func() dhcp.Stats
	// Nodes and VMs list the fabric's nodes and VMs.
	Nodes func(context.Context) ([]api.Node, error)
	VMs   func(context.Context) ([]api.VM, error)
	// StoreSize is the size of this replica's store (etcd's database).
	StoreSize func(context.Context) (int64, error)
	// Leading says whether this replica leads the fabric.
	Leading func() bool
}

// Metrics holds loomd's metrics.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec

	imagedBytes    prometheus.Counter
	imagingSeconds prometheus.Histogram
	imagingFailed  *prometheus.CounterVec

	storeLatency *prometheus.HistogramVec
}

// New makes loomd's registry: the Go and process collectors, the counters
// below and a collector reading src at each scrape.
func New(src Sources, log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{reg: prometheus.NewRegistry(), log: log}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "loom_api_requests_total",
		Help: "API requests served by this replica, by route (the API's pattern, or \"unmatched\") and status code.",
	}, []string{"route", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "loom_api_request_duration_seconds",
		Help:    "Time to answer an API request, by route (a goal long-poll's time includes its wait).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"route"})
	m.inFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "loom_api_requests_in_flight",
		Help: "API requests being answered, by route: the goal route's are the agents' open long-polls.",
	}, []string{"route"})
	m.imagedBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "loom_imaging_bytes_total",
		Help: "Image data written and verified by the nodes' imagings that succeeded.",
	})
	m.imagingSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "loom_imaging_duration_seconds",
		Help:    "Time from a node's first Imaging report to its Imaged report.",
		Buckets: []float64{1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600},
	})
	m.imagingFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "loom_imaging_failures_total",
		Help: "Imagings that failed, by cause (disk, transfer, verify, write, other).",
	}, []string{"cause"})
	for _, c := range []string{api.CauseDisk, api.CauseTransfer, api.CauseVerify, api.CauseWrite, api.CauseOther} {
		m.imagingFailed.WithLabelValues(c) // present at 0, so that rate() sees the first failure
	}
	m.storeLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "loom_store_request_duration_seconds",
		Help:    "Time of this replica's requests to etcd, by kind (get, put, delete, txn, compact, do).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"op"})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.latency, m.inFlight, m.imagedBytes, m.imagingSeconds, m.imagingFailed, m.storeLatency,
		newState(src, log),
	)
	return m
}

// Registry is the registry, for tests and for more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the exposition. A source that fails leaves its metrics
// out (and logs why); the rest are served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	})
}

// router finds the pattern a request will be served by (*http.ServeMux).
type router interface {
	Handler(*http.Request) (http.Handler, string)
}

// API counts the requests h answers. h should be an *http.ServeMux, whose
// patterns are the route label; otherwise the pattern the mux recorded on
// the request (after) is, and in-flight requests are not counted by route.
func (m *Metrics) API(h http.Handler) http.Handler {
	mux, _ := h.(router)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := ""
		if mux != nil {
			_, route = mux.Handler(r)
		}
		if route == "" {
			route = "unmatched"
		}
		g := m.inFlight.WithLabelValues(route)
		g.Inc()
		cw := &codeWriter{ResponseWriter: w}
		defer func() {
			g.Dec()
			code := cw.code
			if code == 0 {
				code = http.StatusOK
			}
			m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
			m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(cw, r)
	})
}

// codeWriter remembers the status code written.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (c *codeWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.ResponseWriter.Write(b)
}

// Flush lets long answers (a follow of events) stream through.
func (c *codeWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// Imaged counts a node's successful imaging (node.Observer).
func (m *Metrics) Imaged(bytes uint64, took time.Duration) {
	m.imagedBytes.Add(float64(bytes))
	m.imagingSeconds.Observe(took.Seconds())
}

// ImagingFailed counts a node's failed imaging (node.Observer).
func (m *Metrics) ImagingFailed(cause string) {
	m.imagingFailed.WithLabelValues(api.FailureCause(cause)).Inc()
}

// StoreRequest times one request to etcd (store.Store.Observe).
func (m *Metrics) StoreRequest(op string, took time.Duration) {
	m.storeLatency.WithLabelValues(op).Observe(took.Seconds())
}
