package metrics

import (
	"io"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"
)

// Samples parses a text exposition into `name{label="value",…}` → value,
// labels sorted by name as Prometheus prints them; a histogram gives its
// name_count and name_sum. For tests and benchmarks that read /metrics.
func Samples(r io.Reader) (map[string]float64, error) {
	fams, err := new(expfmt.TextParser).TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			key := func(n string) string {
				if len(ls) == 0 {
					return n
				}
				return n + "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key(name)] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key(name)] = m.GetGauge().GetValue()
			case m.Untyped != nil:
				out[key(name)] = m.GetUntyped().GetValue()
			case m.Histogram != nil:
				out[key(name+"_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key(name+"_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out, nil
}
