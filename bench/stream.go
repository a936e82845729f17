package main

// Streaming mode (go run ./bench -stream): OpenAI-style event streams
// through Caddy, with and without token counting, measured per chunk.

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// streamHeading starts the headings of the sections of bench/results.md
// the streaming mode writes, one per -chunk-gap; the default mode keeps
// them when it rewrites the file.
const streamHeading = "## Streaming with token counting"

func streamHeadingFor(chunks int, gap time.Duration) string {
	h := streamHeading
	if chunks != defaultChunks {
		h += fmt.Sprintf(", %d chunks a stream", chunks)
	}
	if gap > 0 {
		h += fmt.Sprintf(", chunks %v apart", gap)
	}
	return h
}

// defaultChunks is -chunks' default: the section for it has the plain heading.
const defaultChunks = 200

type streamConfig struct {
	name, title string
	caddyfile   string // a template: %[1]d port, %[2]s upstream, %[3]s key file
	// askUsage: the client asks for the usage chunk itself
	// (stream_options.include_usage) and so sees it.
	askUsage bool
}

var streamConfigs = []streamConfig{
	{"s0", "reverse_proxy alone (flush_interval -1)", `
	reverse_proxy %[2]s {
		flush_interval -1
	}`, true},
	{"s1", "apikey without tokens + reverse_proxy", `
	apikey {
		keys file %[3]s
	}
	reverse_proxy %[2]s {
		flush_interval -1
	}`, true},
	{"s2", "apikey with tokens openai; the client asks for usage", `
	apikey {
		keys file %[3]s
		tokens openai
		token_quota dev 100000000000/day
	}
	reverse_proxy %[2]s {
		flush_interval -1
	}`, true},
	{"s3", "apikey with tokens openai; the client does not ask: the gateway adds include_usage and hides the usage chunk", `
	apikey {
		keys file %[3]s
		tokens openai
		token_quota dev 100000000000/day
	}
	reverse_proxy %[2]s {
		flush_interval -1
	}`, false},
}

// The upstream's events: content chunks, the usage chunk, the end.
var (
	streamChunk = []byte(`data: {"id":"chatcmpl-b","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" word"}}],"usage":null}` + "\n\n")
	usageChunk  = []byte(`data: {"id":"chatcmpl-b","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}` + "\n\n")
	doneChunk   = []byte("data: [DONE]\n\n")
)

// The clients' request bodies, with and without stream_options.
const (
	bodyAsk   = `{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello."}]}`
	bodyNoAsk = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello."}]}`
)

type streamOptions struct {
	chunks, concurrency, nkeys int
	gap                        time.Duration
	warmup, duration           time.Duration
	rounds                     int
	only, profile              []string
	out, version               string
}

type streamResult struct {
	streams, errors int
	chunksPerSec    float64
	cpuPerChunk     float64 // ns of Caddy CPU per content chunk delivered
	cpuPerStream    time.Duration
	ttfc50, ttfc99  time.Duration
	readsPerStream  float64
}

// startStreamUpstream answers every request with an event stream of n
// content chunks, flushed one by one (gap apart when gap > 0), then the
// usage chunk when the request asks for it, then [DONE].
func startStreamUpstream(n int, gap time.Duration) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	ask := []byte(`"include_usage":true`)
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"text/event-stream"}
		h["Cache-Control"] = []string{"no-cache"}
		rc := http.NewResponseController(w)
		for i := 0; i < n; i++ {
			if gap > 0 && i > 0 {
				time.Sleep(gap)
			}
			if _, err := w.Write(streamChunk); err != nil {
				return
			}
			rc.Flush()
		}
		if bytes.Contains(body, ask) {
			w.Write(usageChunk)
			rc.Flush()
		}
		w.Write(doneChunk)
	}))
	return l.Addr().String()
}

func runStream(bin, work string, o streamOptions) {
	upstream := startStreamUpstream(o.chunks, o.gap)
	keyFile, _, auths := writeKeysAs(work, "stream-keys.json", "writer", o.nkeys)
	selected := map[string]bool{}
	for _, n := range o.only {
		selected[strings.TrimSpace(n)] = true
	}
	results := map[string][]streamResult{}
	for round := 1; round <= o.rounds; round++ {
		for _, c := range streamConfigs {
			if !selected[c.name] {
				continue
			}
			prof := ""
			if slices.Contains(o.profile, c.name) && round == o.rounds {
				prof = filepath.Join("bench", "profile-"+c.name+".txt")
				if o.gap > 0 || o.chunks != defaultChunks {
					prof = filepath.Join("bench", fmt.Sprintf("profile-%s-%dchunks-%v.txt", c.name, o.chunks, o.gap))
				}
			}
			r := runStreamConfig(bin, work, c, upstream, keyFile, auths, o, prof)
			log.Printf("round %d %s: %.0f chunks/s, %.3f µs CPU/chunk, %v CPU/stream, first chunk p50 %v, %.1f reads/stream, %d streams, %d errors",
				round, c.name, r.chunksPerSec, r.cpuPerChunk/1e3, r.cpuPerStream, r.ttfc50, r.readsPerStream, r.streams, r.errors)
			results[c.name] = append(results[c.name], r)
		}
	}
	writeStreamResults(o, results)
	log.Printf("wrote the section %q of %s", streamHeadingFor(o.chunks, o.gap), o.out)
}

func runStreamConfig(bin, work string, c streamConfig, upstream, keyFile string, auths []string, o streamOptions, profileTo string) streamResult {
	cmd, port, adminPort, stop := startCaddy(bin, work, c.name, c.caddyfile, upstream, keyFile)
	defer stop()
	url := fmt.Sprintf("http://127.0.0.1:%d/v1/chat/completions", port)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.concurrency, MaxConnsPerHost: o.concurrency, DisableCompression: true}}
	defer client.CloseIdleConnections()
	body := []byte(bodyNoAsk)
	if c.askUsage {
		body = []byte(bodyAsk)
	}
	expect := o.chunks + 1 // content chunks and [DONE]
	if c.askUsage {
		expect++
	}
	streamLoad(client, url, body, auths, c.askUsage, expect, o.concurrency, o.warmup, nil)

	profiled := make(chan []byte, 1)
	if profileTo != "" {
		go func() {
			profiled <- fetchProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, max(int(o.duration.Seconds())-1, 1)))
		}()
	} else {
		profiled <- nil
	}
	var s streamStats
	start := time.Now()
	cpuBefore := cpuTime(cmd.Process.Pid)
	streamLoad(client, url, body, auths, c.askUsage, expect, o.concurrency, o.duration, &s)
	cpuUsed := cpuTime(cmd.Process.Pid) - cpuBefore
	elapsed := time.Since(start)
	if raw := <-profiled; raw != nil {
		writeProfileFocus(bin, raw, profileTo, `caddy-apikey/tokens\.`, "",
			"Package tokens' share: reading the request body's fields, adding include_usage, scanning the stream (-focus caddy-apikey/tokens\\.)")
	}
	r := streamResult{streams: s.streams, errors: s.errors}
	chunks := s.streams * o.chunks
	r.chunksPerSec = float64(chunks) / elapsed.Seconds()
	if chunks > 0 {
		r.cpuPerChunk = float64(cpuUsed) / float64(chunks)
		r.cpuPerStream = cpuUsed / time.Duration(s.streams)
		r.readsPerStream = float64(s.reads) / float64(s.streams)
	}
	slices.Sort(s.ttfc)
	if len(s.ttfc) > 0 {
		r.ttfc50, r.ttfc99 = s.ttfc[len(s.ttfc)/2], s.ttfc[len(s.ttfc)*99/100]
	}
	return r
}

// streamStats is what a measured load saw: streams read whole and as
// expected, errors, the body reads they took and their times to the first
// byte of the answer's body.
type streamStats struct {
	streams, errors, reads int
	ttfc                   []time.Duration
}

// streamLoad keeps concurrency streams in flight and starts no new one
// after d; it returns when the last ends, so the CPU measured around it
// is that of whole streams. A stream counts when it has expect events, ends
// with [DONE] and shows the usage chunk exactly when the client asked.
func streamLoad(client *http.Client, url string, body []byte, auths []string, askUsage bool, expect, concurrency int, d time.Duration, stats *streamStats) {
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var next atomic.Int64
	var firstErr sync.Once
	dataPrefix, usageMark := []byte("data: "), []byte(`"usage":{`)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine streamStats
			buf := make([]byte, 64<<10)
			var acc []byte
			for time.Now().Before(deadline) {
				i := int(next.Add(1))
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header["Authorization"] = []string{auths[i%len(auths)]}
				req.Header["Content-Type"] = []string{"application/json"}
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					mine.errors++
					firstErr.Do(func() { log.Printf("stream: %v", err) })
					continue
				}
				acc = acc[:0]
				var first time.Duration
				reads := 0
				for {
					n, err := resp.Body.Read(buf)
					if n > 0 {
						if reads == 0 {
							first = time.Since(start)
						}
						reads++
						acc = append(acc, buf[:n]...)
					}
					if err != nil {
						break
					}
				}
				resp.Body.Close()
				ok := resp.StatusCode == http.StatusOK && bytes.Count(acc, dataPrefix) == expect &&
					bytes.HasSuffix(acc, doneChunk) && bytes.Contains(acc, usageMark) == askUsage
				if !ok {
					mine.errors++
					firstErr.Do(func() {
						log.Printf("stream: status %d, %d events (want %d), usage shown %v (want %v), %.200q",
							resp.StatusCode, bytes.Count(acc, dataPrefix), expect, bytes.Contains(acc, usageMark), askUsage, acc)
					})
					continue
				}
				mine.streams++
				mine.reads += reads
				if stats != nil {
					mine.ttfc = append(mine.ttfc, first)
				}
			}
			mu.Lock()
			if stats != nil {
				stats.streams += mine.streams
				stats.errors += mine.errors
				stats.reads += mine.reads
				stats.ttfc = append(stats.ttfc, mine.ttfc...)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
}

func writeStreamResults(o streamOptions, results map[string][]streamResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", streamHeadingFor(o.chunks, o.gap))
	args := slices.Clone(os.Args[1:])
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t") {
			args[i] = fmt.Sprintf("%q", a)
		}
	}
	cmdline := "go run ./bench " + strings.Join(args, " ")
	fmt.Fprintf(&b, "Written by `%s` on %s (%d CPUs, %s; Caddy %s).\n\n", cmdline, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.Version(), o.version)
	gap := "as fast as the upstream writes them, each flushed"
	if o.gap > 0 {
		gap = fmt.Sprintf("%v apart, each flushed", o.gap)
	}
	fmt.Fprintf(&b, "- Each stream: POST /v1/chat/completions, %d `chat.completion.chunk` events of %d bytes (`\"usage\":null`) %s, the usage chunk when include_usage is set, then `[DONE]`.\n", o.chunks, len(streamChunk), gap)
	fmt.Fprintf(&b, "- %d interleaved rounds; each run %v (after %v of warm-up) at %d streams in flight, keep-alive, over %d dev keys (writer); a run's last streams end after it.\n\n", o.rounds, o.duration, o.warmup, o.concurrency, o.nkeys)
	fmt.Fprintf(&b, "| config | what | Caddy CPU per chunk | over (s1) | over (s0) | chunks/s | Caddy CPU per stream | first chunk p50 | p99 | client reads per stream | streams | errors |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	overs := func(rs, base []streamResult) string {
		var d []float64
		for i := range rs {
			if i < len(base) {
				d = append(d, rs[i].cpuPerChunk-base[i].cpuPerChunk)
			}
		}
		if len(d) == 0 {
			return "-"
		}
		return fmt.Sprintf("%+.3f µs", median(d)/1e3)
	}
	for _, c := range streamConfigs {
		rs := results[c.name]
		if len(rs) == 0 {
			continue
		}
		var cpc, cps []float64
		var rate, reads []float64
		var t50, t99 []time.Duration
		streams, errs := 0, 0
		for _, r := range rs {
			cpc = append(cpc, r.cpuPerChunk)
			cps = append(cps, float64(r.cpuPerStream))
			rate = append(rate, r.chunksPerSec)
			reads = append(reads, r.readsPerStream)
			t50 = append(t50, r.ttfc50)
			t99 = append(t99, r.ttfc99)
			streams += r.streams
			errs += r.errors
		}
		fmt.Fprintf(&b, "| (%s) | %s | %.3f µs | %s | %s | %.0f | %.1f µs | %v | %v | %.1f | %d | %d |\n", c.name, c.title,
			median(cpc)/1e3, overs(rs, results["s1"]), overs(rs, results["s0"]), median(rate),
			median(cps)/1e3, median(t50).Round(time.Microsecond), median(t99).Round(time.Microsecond), median(reads), streams, errs)
	}
	fmt.Fprintf(&b, "\nCaddy CPU is user and system time from /proc/<pid>/stat around each measured run, divided by the content chunks delivered (%d a stream; the usage chunk and `[DONE]` are not counted); \"over\" is the median of the differences to (s1) or (s0) in the same round. Token counting's cost per chunk is (s2) or (s3) over (s1); a route without tokens costs (s1) over (s0), which is apikey's per-request work spread over the stream.\n", o.chunks)
	check(os.WriteFile(o.out, []byte(replaceSection(readOr(o.out), streamHeadingFor(o.chunks, o.gap), b.String())), 0o644))
}

func readOr(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "# Load benchmark results\n"
	}
	return string(data)
}

// section returns the section of doc under heading (to the next heading of
// its level, or the end), or "".
func section(doc, heading string) string {
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		return ""
	}
	rest := doc[i+1:]
	if j := strings.Index(rest[len(heading):], "\n## "); j >= 0 {
		return rest[:len(heading)+j+1]
	}
	return rest
}

// replaceSection puts sec in place of doc's section under heading, or
// appends it.
func replaceSection(doc, heading, sec string) string {
	if old := section(doc, heading); old != "" {
		return strings.Replace(doc, old, sec, 1)
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + sec
}
