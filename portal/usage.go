package portal

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/moodmnky/caddy-apikey/usage"
)

// usageRange is a period the usage page shows.
type usageRange struct {
	Name  string
	Label string
	span  time.Duration
	byDay bool
}

var usageRanges = []usageRange{
	{"24h", "Last 24 hours", 24 * time.Hour, false},
	{"7d", "Last 7 days", 7 * 24 * time.Hour, true},
	{"30d", "Last 30 days", 30 * 24 * time.Hour, true},
}

func usageQuery(from, to time.Time, byDay bool) usage.Query {
	return usage.Query{From: from, To: to, ByDay: byDay}
}

// usageShows are what the chart's bars can show: requests, or the LLM
// tokens (prompt and completion) of their answers.
var usageShows = []struct{ Name, Label string }{
	{"requests", "Requests"},
	{"tokens", "Tokens"},
}

// bar is one bar of the chart, laid out for SVG; its height is Requests,
// or Tokens when the chart shows tokens.
type bar struct {
	Label              string
	Tick               string // shown under some bars
	Requests           int64
	Prompt, Completion int64 // tokens
	Tokens             int64 // prompt and completion
	X, Y, W, H         int
	// TickAt is where the tick's text is, in percent of the chart's
	// width; TickAnchor keeps the first and last inside it; MinorTick
	// ticks are hidden at phone width.
	TickAt     string
	TickAnchor string
	MinorTick  bool
}

// yTick is a line of the chart's scale: a value and its height, in
// percent from the chart's top.
type yTick struct {
	Label string
	Y     int    // in plot units, for the grid line
	At    string // percent of the chart's height, for the text
}

// tableLine names one line of the usage table.
type tableLine struct {
	KeyID, Service, Method, Endpoint string
}

// tableRow is one line of the usage table, with its counts.
type tableRow struct {
	tableLine
	usage.Tally
}

// Chart geometry. The bars are drawn in plot units (chartW × plotH, with
// yAxisW to their left for the scale), stretched to the chart's box; the
// text is placed in percent of the box, so it keeps its shape at any width.
const (
	chartW, plotH = 720, 180
	yAxisW        = 60
	// plotTop and plotHeight are where the plot is, in percent of the
	// chart's height: room for the scale's top label above, the ticks below.
	plotTop, plotHeight = 10, 75
)

// scaleTop is a round number at least peak: 1, 2 or 5 times a power of ten.
func scaleTop(peak int64) int64 {
	top := int64(1)
	for {
		for _, m := range []int64{1, 2, 5} {
			if top*m >= peak {
				return top * m
			}
		}
		if top > math.MaxInt64/100 {
			return peak
		}
		top *= 10
	}
}

// compact writes n in at most 4 characters or so: 950, 1.2k, 45k, 3M.
func compact(n int64) string {
	f := float64(n)
	for _, u := range []struct {
		div  float64
		unit string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if f >= u.div {
			v := f / u.div
			if v < 10 && math.Mod(v, 1) != 0 {
				return strconv.FormatFloat(v, 'f', 1, 64) + u.unit
			}
			return strconv.FormatFloat(math.Round(v), 'f', 0, 64) + u.unit
		}
	}
	return strconv.FormatInt(n, 10)
}

func percent(f float64) string { return strconv.FormatFloat(f, 'f', 2, 64) + "%" }

func (v *visit) usagePage() {
	if data, ok := v.usageData(); ok {
		v.render(http.StatusOK, "usage.html", "usage", "Usage", data)
	}
}

// usageData is what the usage page shows, as its query asks; ok is false
// when the page failed (and said so).
func (v *visit) usageData() (data map[string]any, ok bool) {
	q := v.r.URL.Query()
	rng := usageRanges[0]
	for _, r := range usageRanges {
		if r.Name == q.Get("range") {
			rng = r
		}
	}
	all := v.admin && q.Get("all") == "1"
	show := "requests"
	if q.Get("show") == "tokens" {
		show = "tokens"
	}
	tokens := show == "tokens"
	keyID, service, endpoint := q.Get("key"), q.Get("service"), q.Get("endpoint")

	ctx := v.r.Context()
	owned := map[string]bool{}
	var keyIDs []string
	var quotas []keyView // today's quota of the visitor's working keys
	if !all {
		recs, err := v.myRecords(ctx)
		if err != nil {
			v.storeFailed(err)
			return nil, false
		}
		for _, rec := range recs {
			owned[rec.ID] = true
			keyIDs = append(keyIDs, rec.ID)
			if (keyID == "" || keyID == rec.ID) && len(quotas) < 50 {
				if kv := v.view(rec, nil); kv.Quota != nil {
					quotas = append(quotas, kv)
				}
			}
		}
		slices.Sort(keyIDs)
	}

	now := v.s.now().UTC()
	var from time.Time
	var buckets int
	if rng.byDay {
		end := now.Truncate(24 * time.Hour).Add(24 * time.Hour)
		buckets = int(rng.span / (24 * time.Hour))
		from = end.Add(-rng.span)
	} else {
		buckets = 24
		from = now.Truncate(time.Hour).Add(-23 * time.Hour)
	}
	var rows []usage.Row
	var usageErr string
	if v.s.backend.Usage != nil {
		var err error
		rows, err = v.s.backend.Usage(ctx, usage.Query{KeyID: keyID, Service: service, From: from, To: now, ByDay: rng.byDay})
		if err != nil {
			usageErr = "Usage could not be read right now; try again shortly."
		}
	}

	counts := make([]usage.Tally, buckets)
	sums := map[tableLine]usage.Tally{}
	services, endpoints := map[string]bool{}, map[string]bool{}
	var total usage.Tally
	step := time.Hour
	if rng.byDay {
		step = 24 * time.Hour
	}
	for _, row := range rows {
		if !all && !owned[row.KeyID] {
			continue
		}
		services[row.Service] = true
		endpoints[row.Endpoint] = true
		if endpoint != "" && row.Endpoint != endpoint {
			continue
		}
		i := int(row.Time.Sub(from) / step)
		if i < 0 || i >= buckets {
			continue
		}
		t := usage.Tally{Requests: row.Requests, PromptTokens: row.PromptTokens, CompletionTokens: row.CompletionTokens}
		counts[i].Add(t)
		total.Add(t)
		line := tableLine{KeyID: row.KeyID, Service: row.Service, Method: row.Method, Endpoint: row.Endpoint}
		sum := sums[line]
		sum.Add(t)
		sums[line] = sum
	}
	// measure is what the chart shows, and what orders the table.
	measure := func(t usage.Tally) int64 {
		if tokens {
			return t.PromptTokens + t.CompletionTokens
		}
		return t.Requests
	}
	table := make([]tableRow, 0, len(sums))
	for line, t := range sums {
		table = append(table, tableRow{line, t})
	}
	sort.Slice(table, func(i, j int) bool {
		if a, b := measure(table[i].Tally), measure(table[j].Tally); a != b {
			return a > b
		}
		return fmt.Sprint(table[i]) < fmt.Sprint(table[j])
	})
	const maxTable = 200
	cut := len(table) > maxTable
	table = table[:min(len(table), maxTable)]

	var peak int64 = 1
	for _, t := range counts {
		peak = max(peak, measure(t))
	}
	top := scaleTop(peak)
	var yTicks []yTick
	for _, part := range []int64{0, 1, 2} {
		v := top * part / 2
		y := plotH - int(float64(v)*plotH/float64(top))
		yTicks = append(yTicks, yTick{Label: compact(v), Y: y, At: percent(plotTop + plotHeight*float64(y)/plotH)})
	}
	bars := make([]bar, buckets)
	slot := chartW / buckets
	for i, t := range counts {
		at := from.Add(time.Duration(i) * step)
		// In float: tokens times the chart's height may pass int64.
		h := int(float64(measure(t)) * plotH / float64(top))
		b := bar{Requests: t.Requests, Prompt: t.PromptTokens, Completion: t.CompletionTokens,
			Tokens: t.PromptTokens + t.CompletionTokens,
			X:      i*slot + 2, W: slot - 4, H: h, Y: plotH - h}
		if rng.byDay {
			b.Label = at.Format("Mon 2 Jan")
			if buckets <= 7 || i%5 == 0 {
				b.Tick, b.MinorTick = at.Format("2 Jan"), buckets <= 7 && i%2 == 1
			}
		} else {
			b.Label = at.Format("2 Jan 15:00") + " UTC"
			if i%3 == 0 {
				b.Tick, b.MinorTick = at.Format("15:00"), i%6 != 0
			}
		}
		center := float64(yAxisW+i*slot+slot/2) / float64(yAxisW+chartW)
		b.TickAt, b.TickAnchor = percent(100*center), "middle"
		if i == 0 {
			b.TickAt, b.TickAnchor = percent(100*float64(yAxisW+i*slot)/float64(yAxisW+chartW)), "start"
		}
		bars[i] = b
	}
	return map[string]any{
		"Ranges": usageRanges, "Range": rng.Name, "All": all, "KeyID": keyID, "Service": service, "Endpoint": endpoint,
		"KeyIDs": keyIDs, "Services": sortedKeys(services, service), "Endpoints": sortedKeys(endpoints, endpoint),
		"Bars": bars, "Peak": peak, "Quotas": quotas, "Total": total, "Table": table, "Cut": cut, "Error": usageErr,
		"Shows": usageShows, "Show": show, "Tokens": tokens, "TotalTokens": total.PromptTokens + total.CompletionTokens,
		"ChartW": chartW, "PlotH": plotH, "YAxisW": yAxisW, "YTicks": yTicks, "Top": top,
		"PlotTop": percent(plotTop), "PlotHeight": percent(plotHeight), "From": from.Format("2006-01-02 15:04"), "To": now.Format("2006-01-02 15:04"),
		"Unit":     map[bool]string{false: "hour", true: "day"}[rng.byDay],
		"Activity": v.activityOf(keyID, all || owned[keyID]), "CSV": v.csvLinks(),
	}, true
}

func sortedKeys(m map[string]bool, keep string) []string {
	if keep != "" {
		m[keep] = true
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out[:min(len(out), 500)]
}
