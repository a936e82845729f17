package main

// Profiles of the real Caddy process under load: CPU, allocations and the
// garbage collector, written as text beside the results.

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// profiling is a run that is profiled, into the text file to.
type profiling struct {
	to string
	// raw, when set, is a directory to keep the raw profiles in, named
	// after name.
	raw, name string
}

// snapshot is what a profiled run takes before its measured load.
type snapshot struct {
	admin        string
	allocsBefore []byte
	cpu          chan []byte
	gcMark       int
	gctrace      *lineLog
}

// start takes the allocation profile so far (the base the run's is
// compared with) and starts a CPU profile of the measured load.
func (p *profiling) start(admin string, d time.Duration, gctrace *lineLog) *snapshot {
	s := &snapshot{admin: admin, allocsBefore: fetchProfile(admin + "/debug/pprof/allocs"),
		cpu: make(chan []byte, 1), gctrace: gctrace, gcMark: gctrace.mark()}
	go func() {
		// A second shorter than the load, so that it covers load only.
		s.cpu <- fetchProfile(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", admin, max(int(d.Seconds())-1, 1)))
	}()
	return s
}

// finish writes what the measured load cost and its profiles to p.to.
func (p *profiling) finish(bin string, s *snapshot, v view, c config, o options, r result, cpuUsed time.Duration, before, after *runtime.MemStats) {
	allocsAfter := fetchProfile(s.admin + "/debug/pprof/allocs")
	gcLines := s.gctrace.since(s.gcMark)
	cpu := <-s.cpu

	if p.raw != "" {
		check(os.MkdirAll(p.raw, 0o755))
		for suffix, data := range map[string][]byte{"cpu": cpu, "allocs-before": s.allocsBefore, "allocs-after": allocsAfter} {
			if data != nil {
				check(os.WriteFile(filepath.Join(p.raw, p.name+"-"+suffix+".pb.gz"), data, 0o644))
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "# Profile of (%s) under load, %s view\n\n", c.name, v.name)
	fmt.Fprintf(&b, "(%s) is %s.\n\n", c.name, c.title)
	fmt.Fprintf(&b, "Written by `%s` on %s, from a run of its own after the measured rounds: %v of load at %d requests in flight over %d key ids, after %v of warm-up; %s. Caddy ran with GODEBUG=gctrace=1,memprofilerate=8192 (an allocation sample every 8 KiB).\n\n",
		o.command, time.Now().UTC().Format("2006-01-02 15:04 MST"), o.duration, o.concurrency, o.nkeys, o.warmup, v.describe())

	fmt.Fprintf(&b, "## Per request\n\n")
	fmt.Fprintf(&b, "- Requests: %d in %v (%.0f/s), %d errors.\n", r.requests, o.duration, r.rps, r.errors)
	fmt.Fprintf(&b, "- Caddy CPU (user and system, /proc): %.1f µs a request (%v in all).\n", us(r.cpuPerReq), cpuUsed.Round(time.Millisecond))
	if before != nil && after != nil && r.requests > 0 {
		n := float64(r.requests)
		fmt.Fprintf(&b, "- Heap allocations (runtime.MemStats through /debug/vars): %.1f a request, %.0f B a request, the CPU profiler's own included (its fixed cost spread over the requests; the results' tables have the figures without it).\n", r.allocsPerReq, r.bytesPerReq)
		pauses := time.Duration(after.PauseTotalNs - before.PauseTotalNs)
		fmt.Fprintf(&b, "- Collections: %d, one every %.0f requests; stop-the-world pauses %v in all.\n",
			r.gcs, n/max(float64(r.gcs), 1), pauses.Round(time.Microsecond))
	}
	if g := sumGCTrace(gcLines); g.cycles > 0 {
		share := 0.0
		if cpuUsed > 0 {
			share = 100 * float64(g.work) / float64(cpuUsed)
		}
		fmt.Fprintf(&b, "- Collector CPU from gctrace, %d cycles: %v (%.1f %% of Caddy's CPU): background marking %v, assists %v, stop-the-world phases %v; idle-time marking %v more. Heap goal %d–%d MB.\n",
			g.cycles, g.work.Round(time.Millisecond), share, g.background.Round(time.Millisecond), g.assist.Round(time.Millisecond),
			g.stw.Round(time.Millisecond), g.idle.Round(time.Millisecond), g.goalMin, g.goalMax)
	}

	if cpu != nil {
		raw := writeTemp(cpu)
		defer os.Remove(raw)
		textSection(&b, "CPU: the apikey handler's own work (-top -cum -focus apikey.(*Handler).ServeHTTP -ignore reverseproxy)",
			pprofText(bin, raw, "-top", "-cum", "-nodecount", "30", "-focus", `apikey\.\(\*Handler\)\.ServeHTTP`, "-ignore", "reverseproxy"))
		textSection(&b, "CPU: the whole Caddy process but the profiler, by function (-top -ignore pprof)",
			pprofText(bin, raw, "-top", "-nodecount", "40", "-ignore", "pprof"))
		textSection(&b, "CPU: the whole Caddy process but the profiler, cumulative (-top -cum -ignore pprof)",
			pprofText(bin, raw, "-top", "-cum", "-nodecount", "50", "-ignore", "pprof"))
	}
	if s.allocsBefore != nil && allocsAfter != nil {
		base, raw := writeTemp(s.allocsBefore), writeTemp(allocsAfter)
		defer os.Remove(base)
		defer os.Remove(raw)
		textSection(&b, "Allocations during the load: the apikey handler's own, by objects (-sample_index=alloc_objects -top -focus apikey.(*Handler).ServeHTTP -ignore reverseproxy, base: before the load)",
			pprofText(bin, raw, "-base", base, "-sample_index=alloc_objects", "-top", "-nodecount", "25", "-focus", `apikey\.\(\*Handler\)\.ServeHTTP`, "-ignore", "reverseproxy"))
		textSection(&b, "Allocations during the load: the whole process but the profiler, by objects (-sample_index=alloc_objects -top -ignore pprof)",
			pprofText(bin, raw, "-base", base, "-sample_index=alloc_objects", "-top", "-nodecount", "30", "-ignore", "pprof"))
		textSection(&b, "Allocations during the load: the whole process but the profiler, by bytes (-sample_index=alloc_space -top -ignore pprof)",
			pprofText(bin, raw, "-base", base, "-sample_index=alloc_space", "-top", "-nodecount", "20", "-ignore", "pprof"))
	}
	if len(gcLines) > 0 {
		var gc []string
		for _, l := range gcLines {
			if strings.HasPrefix(l, "gc ") {
				gc = append(gc, l)
			}
		}
		gc = gc[max(len(gc)-10, 0):]
		textSection(&b, "The collector's last cycles during the load (gctrace)", strings.Join(gc, "\n")+"\n")
	}
	check(os.WriteFile(p.to, []byte(b.String()), 0o644))
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func textSection(b *strings.Builder, title, body string) {
	fmt.Fprintf(b, "\n## %s\n\n```\n%s```\n", title, body)
}

func writeTemp(data []byte) string {
	f, err := os.CreateTemp("", "bench-profile-*.pb.gz")
	check(err)
	_, err = f.Write(data)
	check(err)
	check(f.Close())
	return f.Name()
}

// pprofText runs go tool pprof on a profile of bin and returns its text,
// less the lines naming the temporary files.
func pprofText(bin, raw string, args ...string) string {
	out, err := exec.Command("go", append(append([]string{"tool", "pprof"}, args...), bin, raw)...).CombinedOutput()
	if err != nil {
		log.Printf("pprof: %v\n%s", err, out)
		return fmt.Sprintf("pprof failed: %v\n", err)
	}
	var keep []string
	for _, l := range strings.SplitAfter(string(out), "\n") {
		if strings.HasPrefix(l, "File: ") || strings.HasPrefix(l, "Build ID: ") || strings.HasPrefix(l, "Time: ") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "")
}

// gcSums adds up gctrace lines' CPU times.
type gcSums struct {
	cycles                        int
	stw, assist, background, idle time.Duration
	work                          time.Duration // all but idle-time marking
	goalMin, goalMax              int
}

// gctraceLine is GODEBUG=gctrace=1's line: "gc 12 @3.4s 2%: 0.01+1.2+0.003
// ms clock, 0.02+0.5/1.1/0+0.006 ms cpu, 4->4->1 MB, 5 MB goal, ...".
var gctraceLine = regexp.MustCompile(`^gc \d+ @[\d.]+s \d+%: [\d.]+\+[\d.]+\+[\d.]+ ms clock, ([\d.]+)\+([\d.]+)/([\d.]+)/([\d.]+)\+([\d.]+) ms cpu, \d+->\d+->\d+ MB, (\d+) MB goal`)

func sumGCTrace(lines []string) gcSums {
	var g gcSums
	ms := func(s string) time.Duration {
		f, _ := strconv.ParseFloat(s, 64)
		return time.Duration(f * float64(time.Millisecond))
	}
	for _, l := range lines {
		m := gctraceLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		g.cycles++
		g.stw += ms(m[1]) + ms(m[5])
		g.assist += ms(m[2])
		g.background += ms(m[3])
		g.idle += ms(m[4])
		goal, _ := strconv.Atoi(m[6])
		if g.goalMin == 0 || goal < g.goalMin {
			g.goalMin = goal
		}
		g.goalMax = max(g.goalMax, goal)
	}
	g.work = g.stw + g.assist + g.background
	return g
}

// fetchProfile takes a profile through Caddy's admin endpoint.
func fetchProfile(url string) []byte {
	resp, err := http.Get(url)
	if err != nil {
		log.Printf("profile: %v", err)
		return nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		log.Printf("profile %s: %v %s", url, err, resp.Status)
		return nil
	}
	return data
}

// writeProfileFocus writes the top functions under focus (less those under
// ignore, when set), then those of the whole process, as text.
func writeProfileFocus(bin string, data []byte, to, focus, ignore, title string) {
	raw := writeTemp(data)
	defer os.Remove(raw)
	args := []string{"-top", "-cum", "-nodecount", "30", "-focus", focus}
	if ignore != "" {
		args = append(args, "-ignore", ignore)
	}
	out := "# " + title + "\n\n" + pprofText(bin, raw, args...) +
		"\n# The whole Caddy process (-top -cum)\n\n" + pprofText(bin, raw, "-top", "-cum", "-nodecount", "40")
	check(os.WriteFile(to, []byte(out), 0o644))
}
