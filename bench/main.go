// Command bench is the load benchmark: it runs Caddy built from this
// repository in several configurations, one at a time and interleaved, in
// front of the same fast upstream, loads each from this process at a fixed
// concurrency, and writes, per configuration, the medians over rounds of
// its ratios and differences to bare reverse_proxy in the same round to
// bench/results.md. It measures two views, interleaved: cores shared (Caddy,
// the load generator, the upstream and redis-server on every core) and
// pinned (Caddy alone on one core, everything else on another, so that
// requests/s is Caddy's own). Then it profiles the configurations named by
// -profile under load (CPU, allocations, GC) into bench/profile-<config>.txt.
// Run it from the repository root:
//
//	go run ./bench
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/redis/go-redis/v9"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/rediskeys"
)

type config struct {
	name, title string
	caddyfile   string // a template: %[1]d port, %[2]s upstream, %[3]s key file, %[4]s redis, %[5]s bcrypt hash
	needsRedis  bool
}

var configs = []config{
	{"a", "reverse_proxy alone", `
	reverse_proxy %[2]s`, false},
	{"h", "control: reverse_proxy + five response headers like apikey's rate-limit headers, set by Caddy's header directive", `
	header RateLimit-Policy "\"daily\";q=1000000000;w=86400"
	header RateLimit "\"daily\";r=999999999;t=64800"
	header X-RateLimit-Limit 1000000000
	header X-RateLimit-Remaining 999999999
	header X-RateLimit-Reset 1795910400
	reverse_proxy %[2]s`, false},
	{"b", "apikey (key file) + reverse_proxy", `
	apikey {
		keys file %[3]s
		quota dev 1000000000/day
	}
	reverse_proxy %[2]s`, false},
	{"c", "apikey with quotas, burst rate and upstream_auth + reverse_proxy", `
	apikey {
		keys file %[3]s
		service ollama
		quota dev 1000000000/day
		rate dev 100000/s
		upstream_auth bearer upstream-secret-token
	}
	reverse_proxy %[2]s`, false},
	{"d", "basic_auth (bcrypt, hash cache warm) + reverse_proxy", `
	basic_auth {
		bench %[5]s
	}
	reverse_proxy %[2]s`, false},
	{"e", "apikey with the Redis counter store + reverse_proxy", `
	apikey {
		keys file %[3]s
		quota dev 1000000000/day
		counters redis {
			address %[4]s
			timeout 1s
		}
	}
	reverse_proxy %[2]s`, true},
	{"f", "apikey with keys and counters on Redis (keys redis, cache warm) + reverse_proxy", `
	apikey {
		keys redis {
			address %[4]s
			timeout 1s
		}
		quota dev 1000000000/day
		counters redis {
			address %[4]s
			timeout 1s
		}
	}
	reverse_proxy %[2]s`, true},
}

// options are the default mode's settings.
type options struct {
	duration, warmup time.Duration
	rounds           int
	concurrency      int
	nkeys            int
	views            []view
	profile          []string
	profileDuration  time.Duration
	profileRaw       string
	profileView      view
	out              string
	version          string
	command          string
}

func main() {
	duration := flag.Duration("duration", 4*time.Second, "measured time per run")
	warmup := flag.Duration("warmup", time.Second, "unmeasured load before each run")
	rounds := flag.Int("rounds", 7, "interleaved rounds (shared a, h, b, …, pinned a, h, b, …, then again); each figure is the median of per-round ratios")
	concurrency := flag.Int("concurrency", 32, "requests in flight")
	nkeys := flag.Int("keys", 1000, "key ids the load is spread over (-keys 1: every request with the same key)")
	out := flag.String("out", "bench/results.md", "results file")
	only := flag.String("configs", "a,h,b,c,d,e,f", "configurations to run ((a) always runs: it is the reference)")
	viewsFlag := flag.String("views", "shared,pinned", "views to measure: shared (every process on every core), pinned (Caddy on -caddy-cpu, the rest on -load-cpu)")
	caddyCPU := flag.Int("caddy-cpu", 0, "pinned view: the core Caddy runs on")
	loadCPU := flag.Int("load-cpu", 1, "pinned view: the core the load generator, the upstream and redis-server run on")
	profile := flag.String("profile", "c,f", "configurations profiled after the rounds (CPU, allocations, GC) into bench/profile-<config>.txt; \"\" for none")
	profileDuration := flag.Duration("profile-duration", 10*time.Second, "measured time of a profiled run")
	profileRaw := flag.String("profile-raw", "", "directory to keep the raw profiles in (pprof's format), for go tool pprof")
	profileViewFlag := flag.String("profile-view", "", "view the profiles are taken in (default: pinned when measured, else shared)")
	stream := flag.Bool("stream", false, "run the streaming configurations (s0-s3: event streams with and without token counting) instead, and write their section of -out")
	streamOnly := flag.String("stream-configs", "s0,s1,s2,s3", "streaming configurations to run, with -stream")
	streamConcurrency := flag.Int("stream-concurrency", 4, "streams in flight, with -stream")
	chunks := flag.Int("chunks", defaultChunks, "content chunks per stream, with -stream")
	gap := flag.Duration("chunk-gap", 0, "pause of the upstream between chunks, with -stream (0: as fast as it can)")
	flag.Parse()

	work, err := os.MkdirTemp("", "caddy-apikey-bench-")
	check(err)
	defer os.RemoveAll(work)

	log.Print("building cmd/caddy")
	bin := filepath.Join(work, "caddy")
	run(exec.Command("go", "build", "-o", bin, "./cmd/caddy"))
	versionOut, _ := exec.Command(bin, "version").Output()
	version := strings.TrimSpace(string(versionOut))

	if *stream {
		runStream(bin, work, streamOptions{chunks: *chunks, concurrency: *streamConcurrency, nkeys: *nkeys, gap: *gap,
			warmup: *warmup, duration: *duration, rounds: *rounds, only: strings.Split(*streamOnly, ","),
			profile: strings.Split(*profile, ","), out: *out, version: version})
		return
	}

	o := options{duration: *duration, warmup: *warmup, rounds: *rounds, concurrency: *concurrency, nkeys: max(*nkeys, 1),
		out: *out, version: version, command: commandLine()}
	for _, name := range splitList(*viewsFlag) {
		v, err := parseView(name, *caddyCPU, *loadCPU)
		check(err)
		o.views = append(o.views, v)
	}
	if len(o.views) == 0 {
		log.Fatal("-views: no view")
	}
	o.profile = splitList(*profile)
	o.profileDuration, o.profileRaw = *profileDuration, *profileRaw
	o.profileView = o.views[len(o.views)-1]
	if *profileViewFlag != "" {
		o.profileView, err = parseView(*profileViewFlag, *caddyCPU, *loadCPU)
		check(err)
	}

	selected := map[string]bool{"a": true}
	for _, n := range splitList(*only) {
		selected[n] = true
	}
	env := newEnvironment(work, o.nkeys)
	defer env.stop()

	results := map[string]map[string][]result{} // view, config: one result a round
	for _, v := range o.views {
		results[v.name] = map[string][]result{}
	}
	for round := 1; round <= o.rounds; round++ {
		for _, v := range o.views {
			v.enter(env)
			for _, c := range configs {
				if !selected[c.name] || (c.needsRedis && env.redisAddr == "") {
					continue
				}
				r := runConfig(bin, work, v, c, env, o, nil)
				log.Printf("round %d, %s, (%s): %.0f req/s, %v Caddy CPU/request, %.1f allocs/request, p50 %v, p99 %v, %d errors",
					round, v.name, c.name, r.rps, r.cpuPerReq, r.allocsPerReq, r.p50, r.p99, r.errors)
				results[v.name][c.name] = append(results[v.name][c.name], r)
			}
			v.leave(env)
		}
	}
	writeResults(o, results, env.redisNote)
	log.Printf("wrote %s", o.out)

	// Profiles come after the rounds, from runs of their own: profiling
	// must not disturb the figures.
	for _, c := range configs {
		if !slices.Contains(o.profile, c.name) || (c.needsRedis && env.redisAddr == "") {
			continue
		}
		to := filepath.Join("bench", "profile-"+c.name+".txt")
		o.profileView.enter(env)
		po := o
		po.duration = o.profileDuration
		runConfig(bin, work, o.profileView, c, env, po, &profiling{to: to, raw: o.profileRaw, name: c.name})
		o.profileView.leave(env)
		log.Printf("wrote %s", to)
	}
}

// commandLine is how this run was started, for the results.
func commandLine() string {
	parts := []string{"go run ./bench"}
	for _, a := range os.Args[1:] {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// environment is what every run shares: the upstream, the keys, Redis.
type environment struct {
	upstream, keyFile, hash string
	auths                   []string
	basic                   string
	redisAddr, redisNote    string
	redisPID                int
	stopRedis               func()
}

func newEnvironment(work string, nkeys int) *environment {
	e := &environment{upstream: startUpstream()}
	var records []keystore.Record
	e.keyFile, records, e.auths = writeKeys(work, nkeys)
	hash, err := bcrypt.GenerateFromPassword([]byte("bench-password"), bcrypt.DefaultCost)
	check(err)
	e.hash = string(hash)
	e.basic = "Basic " + basicAuth("bench", "bench-password")
	e.redisAddr, e.redisPID, e.stopRedis, e.redisNote = startRedis(work)
	if e.redisAddr != "" {
		loadKeysIntoRedis(e.redisAddr, records)
	}
	return e
}

func (e *environment) stop() { e.stopRedis() }

// header is the request's credential header for configuration c, the i-th
// request of a worker: every configuration gets the same request, key
// included; only basic_auth needs its own header.
func (e *environment) header(c config) func(int) (string, string) {
	if c.name == "d" {
		return func(int) (string, string) { return "Authorization", e.basic }
	}
	return func(i int) (string, string) { return "Authorization", e.auths[i%len(e.auths)] }
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func run(cmd *exec.Cmd) {
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Run())
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startUpstream answers every request with a small body.
func startUpstream() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	body := []byte("ok\n")
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Write(body)
	}))
	return l.Addr().String()
}

// writeKeys makes n dev keys with default quotas (which the load does not
// use up: it is spread over all of them) and returns the key file, the
// records and the requests' headers.
func writeKeys(dir string, n int) (string, []keystore.Record, []string) {
	return writeKeysAs(dir, "keys.json", "reader", n)
}

// writeKeysAs is writeKeys with the keys' role and the file's name.
func writeKeysAs(dir, name, role string, n int) (string, []keystore.Record, []string) {
	records := make([]keystore.Record, n)
	auths := make([]string, n)
	for i := range records {
		k, err := keystore.Generate(keystore.Dev)
		check(err)
		records[i] = keystore.Record{ID: fmt.Sprintf("k_bench_%04d", i), Hash: keystore.Sum(k).Encode(), Role: role, Services: []string{"*"}}
		auths[i] = "Bearer " + k
	}
	data, err := json.Marshal(map[string]any{"keys": records})
	check(err)
	path := filepath.Join(dir, name)
	check(os.WriteFile(path, data, 0o600))
	return path, records, auths
}

// loadKeysIntoRedis puts the records in Redis, as keys redis reads them.
func loadKeysIntoRedis(addr string, records []keystore.Record) {
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	store := rediskeys.NewStore(client, "", "redis "+addr)
	for _, rec := range records {
		check(store.Create(context.Background(), rec))
	}
}

func basicAuth(user, pass string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// startRedis runs redis-server on a free loopback port, if it is installed.
func startRedis(dir string) (addr string, pid int, stop func(), note string) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", 0, func() {}, "(e) and (f) were not run: redis-server is not installed."
	}
	port := freePort()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	check(cmd.Start())
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	waitPort(addr)
	return addr, cmd.Process.Pid, func() { cmd.Process.Kill(); cmd.Wait() }, ""
}

func waitPort(addr string) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log.Fatalf("nothing listens on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// load keeps concurrency requests in flight for d and returns the errors
// and the number of good answers; with lat, it records their latencies.
func load(client *http.Client, url string, header func(int) (string, string), concurrency int, d time.Duration, lat *[][]time.Duration) (errs, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	perWorker := make([][]time.Duration, concurrency)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			myErrs, good := 0, 0
			for i := w * 7919; ctx.Err() == nil; i++ {
				req, _ := http.NewRequest("GET", url, nil)
				if name, value := header(i); name != "" {
					req.Header.Set(name, value)
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						myErrs++
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					myErrs++
					continue
				}
				good++
				if lat != nil {
					mine = append(mine, time.Since(start))
				}
			}
			mu.Lock()
			perWorker[w] = mine
			errs += myErrs
			n += good
			mu.Unlock()
		}()
	}
	wg.Wait()
	if lat != nil {
		*lat = perWorker
	}
	return errs, n
}

func median[T int | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 0 && len(s) > 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}
