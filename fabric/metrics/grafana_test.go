package metrics

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestGrafanaDashboard: every metric scripts/grafana/loom.json queries is
// one loomd exports (a histogram's _bucket, _sum and _count included), so
// a renamed metric cannot leave the dashboard's panels silently empty.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../../scripts/grafana/loom.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("loom.json: %v", err)
	}

	m := New(fakeSources(), nil)
	m.Imaged(1<<20, time.Second)
	m.ImagingFailed("verify")
	m.StoreRequest("get", time.Millisecond)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/nodes", func(http.ResponseWriter, *http.Request) {})
	m.API(mux).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/nodes", nil))
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	have := map[string]bool{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			have[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					have[f[2]+s] = true
				}
			}
		}
	}
	name := regexp.MustCompile(`\bloom_[a-z_]+\b`)
	queries := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			for _, n := range name.FindAllString(tg.Expr, -1) {
				if !have[n] {
					t.Errorf("panel %q queries %s, which loomd does not export", p.Title, n)
				}
			}
		}
	}
	if queries < 15 {
		t.Errorf("the dashboard has %d queries", queries)
	}
}
