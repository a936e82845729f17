package main

// bench/results.md: one section per view, each figure a median over rounds
// of a ratio or difference to (a) in the same round.

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// viewHeading is the heading of view v's section; a key count other than
// the default has a section of its own.
func viewHeading(v view, nkeys int) string {
	h := "## " + v.title
	switch nkeys {
	case defaultKeys:
	case 1:
		h += ", one key"
	default:
		h += fmt.Sprintf(", %d keys", nkeys)
	}
	return h
}

const defaultKeys = 1000

// resultsTitle starts bench/results.md.
const resultsTitle = "# Load benchmark results\n\nWritten by `go run ./bench`; the method, the configurations and what the profiles show are in [docs/benchmarks.md](../docs/benchmarks.md). Profiles: [profile-c.txt](profile-c.txt), [profile-f.txt](profile-f.txt).\n"

// target is one of issue 17's speed targets, checked where its
// configurations ran.
type target struct {
	view, config string
	what         string
	met          func(s summary, h summary) (string, bool)
}

var targets = []target{
	{"shared", "f", "keys and counters on Redis ≤ +12 µs of Caddy CPU a request over (a) and ≥ 0.88 of its requests/s",
		func(s, _ summary) (string, bool) {
			return fmt.Sprintf("%+.1f µs, %.3f", s.cpuOverA, s.ratio), s.cpuOverA <= 12 && s.ratio >= 0.88
		}},
	{"shared", "c", "key file with quota, rate and upstream_auth ≤ +3 µs of Caddy CPU a request over the control (h)",
		func(s, h summary) (string, bool) { return fmt.Sprintf("%+.1f µs", s.cpuOverH), s.cpuOverH <= 3 }},
	{"pinned", "c", "key file with quota, rate and upstream_auth ≥ 0.93 of (a)'s requests/s",
		func(s, _ summary) (string, bool) { return fmt.Sprintf("%.3f", s.ratio), s.ratio >= 0.93 }},
	{"pinned", "f", "keys and counters on Redis ≥ 0.88 of (a)'s requests/s",
		func(s, _ summary) (string, bool) { return fmt.Sprintf("%.3f", s.ratio), s.ratio >= 0.88 }},
}

// summary is a configuration's figures over the rounds of one view.
type summary struct {
	ratio, ratioMin, ratioMax float64 // requests/s over (a)'s, same round
	cpu, cpuOverA, cpuOverH   float64 // µs a request
	hasH                      bool
	allocs, allocsOverA       float64
	bytes                     float64
	perGC                     float64 // requests per collection
	rps                       float64
	p50, p99                  time.Duration
	errors                    int
}

func summarize(rs, base, control []result) summary {
	var s summary
	var ratios, cpus, overA, overH, allocs, allocsOver, bytes, perGC, rps []float64
	var p50, p99 []time.Duration
	for i, r := range rs {
		cpus = append(cpus, us(r.cpuPerReq))
		allocs = append(allocs, r.allocsPerReq)
		bytes = append(bytes, r.bytesPerReq)
		perGC = append(perGC, float64(r.requests)/max(float64(r.gcs), 1))
		rps = append(rps, r.rps)
		p50, p99 = append(p50, r.p50), append(p99, r.p99)
		s.errors += r.errors
		if i < len(base) && base[i].rps > 0 {
			ratios = append(ratios, r.rps/base[i].rps)
			overA = append(overA, us(r.cpuPerReq-base[i].cpuPerReq))
			allocsOver = append(allocsOver, r.allocsPerReq-base[i].allocsPerReq)
		}
		if i < len(control) {
			overH = append(overH, us(r.cpuPerReq-control[i].cpuPerReq))
		}
	}
	s.cpu, s.allocs, s.bytes, s.perGC, s.rps = median(cpus), median(allocs), median(bytes), median(perGC), median(rps)
	s.p50, s.p99 = median(p50), median(p99)
	if len(ratios) > 0 {
		s.ratio, s.cpuOverA, s.allocsOverA = median(ratios), median(overA), median(allocsOver)
		s.ratioMin, s.ratioMax = minOf(ratios), maxOf(ratios)
	}
	if len(overH) > 0 {
		s.cpuOverH, s.hasH = median(overH), true
	}
	return s
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// writeResults writes each view's section of o.out, keeping the file's
// other sections (the other views' and key counts', the streaming mode's).
func writeResults(o options, results map[string]map[string][]result, note string) {
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	doc := resultsTitle
	if old := readOr(o.out); strings.Contains(old, "\n## ") {
		doc += old[strings.Index(old, "\n## "):] // the sections; the title is rewritten
	}
	for _, v := range o.views {
		var b strings.Builder
		heading := viewHeading(v, o.nkeys)
		fmt.Fprintf(&b, "%s\n\n", heading)
		fmt.Fprintf(&b, "Written by `%s` on %s.\n\n", o.command, time.Now().UTC().Format("2006-01-02 15:04 MST"))
		fmt.Fprintf(&b, "- Machine: %d CPUs (%s), %s/%s; %s.\n", runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH, v.describe())
		fmt.Fprintf(&b, "- Go: %s. Caddy: %s.\n", runtime.Version(), o.version)
		turn := "every configuration in turn"
		if len(o.views) > 1 {
			turn = "every configuration of both views in turn"
		}
		fmt.Fprintf(&b, "- %d round(s), each running %s (interleaved); each run %v after %v of warm-up, at %d requests in flight, keep-alive, over %d key id(s).\n\n",
			o.rounds, turn, o.duration, o.warmup, o.concurrency, o.nkeys)
		fmt.Fprintf(&b, "| config | what | req/s ratio to (a) | rounds' range | Caddy CPU per request | over (a) | over (h) | allocs per request | over (a) | bytes per request | requests per GC | median req/s | p50 | p99 | errors |\n")
		fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		byView := results[v.name]
		sums := map[string]summary{}
		for _, c := range configs {
			rs := byView[c.name]
			if len(rs) == 0 {
				continue
			}
			s := summarize(rs, byView["a"], byView["h"])
			sums[c.name] = s
			overH := "-"
			if s.hasH {
				overH = fmt.Sprintf("%+.1f µs", s.cpuOverH)
			}
			fmt.Fprintf(&b, "| (%s) | %s | %.3f | %.3f–%.3f | %.1f µs | %+.1f µs | %s | %.1f | %+.1f | %.0f | %.0f | %.0f | %v | %v | %d |\n",
				c.name, c.title, s.ratio, s.ratioMin, s.ratioMax, s.cpu, s.cpuOverA, overH, s.allocs, s.allocsOverA, s.bytes,
				s.perGC, s.rps, s.p50.Round(time.Microsecond), s.p99.Round(time.Microsecond), s.errors)
		}
		fmt.Fprintf(&b, "\nEvery figure but the medians of req/s, p50 and p99 is the median over rounds of a per-round figure: the ratio of requests/s to (a)'s in the same round and view, the difference of Caddy's CPU time per request (user and system, from /proc/<pid>/stat around the measured load) to (a)'s or the control (h)'s in the same round, heap allocations per request (runtime.MemStats' Mallocs and TotalAlloc through Caddy's admin endpoint, /debug/vars). The rounds' range is the lowest and highest per-round ratio.")
		if v.pinned {
			fmt.Fprintf(&b, " Caddy has a core of its own and is the bottleneck, so its requests/s is the figure of record; its CPU per request is about one core divided by requests/s.\n")
		} else {
			fmt.Fprintf(&b, " The load generator, the upstream and redis-server share the cores with Caddy and move requests/s around, so Caddy's CPU per request is the figure of record.\n")
		}
		var lines []string
		for _, t := range targets {
			s, ok := sums[t.config]
			if t.view != v.name || !ok || (strings.Contains(t.what, "(h)") && !s.hasH) {
				continue
			}
			got, met := t.met(s, sums["h"])
			verdict := "**missed**"
			if met {
				verdict = "met"
			}
			lines = append(lines, fmt.Sprintf("- (%s) %s: %s, %s.", t.config, t.what, got, verdict))
		}
		if len(lines) > 0 {
			fmt.Fprintf(&b, "\nIssue 17's targets, this run:\n\n%s\n", strings.Join(lines, "\n"))
		}
		if note != "" {
			fmt.Fprintf(&b, "\n%s\n", note)
		}
		doc = putSection(doc, heading, b.String())
	}
	check(os.WriteFile(o.out, []byte(doc), 0o644))
}

// putSection replaces doc's section under heading, or inserts it before
// the streaming mode's sections.
func putSection(doc, heading, sec string) string {
	if section(doc, heading) != "" {
		return replaceSection(doc, heading, sec)
	}
	if i := strings.Index(doc, "\n"+streamHeading); i >= 0 {
		return strings.TrimRight(doc[:i], "\n") + "\n\n" + sec + "\n" + doc[i+1:]
	}
	return replaceSection(doc, heading, sec)
}
