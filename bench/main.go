// Command bench is the load benchmark: it runs Caddy built from this
// repository in several configurations, one at a time and interleaved, in
// front of the same fast upstream, loads each from this process at a fixed
// concurrency, and writes the medians and their ratio to bare
// reverse_proxy to bench/results.md. Run it from the repository root:
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
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
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
	header RateLimit-Policy "\"daily\";q=5000;w=86400"
	header RateLimit "\"daily\";r=4999;t=64800"
	header X-RateLimit-Limit 5000
	header X-RateLimit-Remaining 4999
	header X-RateLimit-Reset 1795910400
	reverse_proxy %[2]s`, false},
	{"b", "apikey (key file) + reverse_proxy", `
	apikey {
		keys file %[3]s
	}
	reverse_proxy %[2]s`, false},
	{"c", "apikey with quotas, burst rate and upstream_auth + reverse_proxy", `
	apikey {
		keys file %[3]s
		service ollama
		quota dev 100000000/day
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
		counters redis {
			address %[4]s
			timeout 1s
		}
	}
	reverse_proxy %[2]s`, true},
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int
	// cpuPerReq is Caddy's CPU time (user and system, from /proc) per
	// request served in the measured run; 0 where /proc is missing.
	cpuPerReq time.Duration
}

func main() {
	duration := flag.Duration("duration", 5*time.Second, "measured time per run")
	warmup := flag.Duration("warmup", time.Second, "unmeasured load before each run")
	rounds := flag.Int("rounds", 3, "interleaved rounds (a, b, c, d, e, a, b, …)")
	concurrency := flag.Int("concurrency", 32, "requests in flight")
	nkeys := flag.Int("keys", 1000, "key ids the load is spread over")
	out := flag.String("out", "bench/results.md", "results file")
	only := flag.String("configs", "a,h,b,c,d,e,f", "configurations to run")
	profile := flag.String("profile", "b,e", "configurations whose last run is CPU-profiled, written to bench/profile-<config>.txt")
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
	version, _ := exec.Command(bin, "version").Output()

	if *stream {
		runStream(bin, work, streamOptions{chunks: *chunks, concurrency: *streamConcurrency, nkeys: *nkeys, gap: *gap,
			warmup: *warmup, duration: *duration, rounds: *rounds, only: strings.Split(*streamOnly, ","),
			profile: strings.Split(*profile, ","), out: *out, version: strings.TrimSpace(string(version))})
		return
	}

	upstream := startUpstream()
	keyFile, records, auths := writeKeys(work, *nkeys)
	hash, err := bcrypt.GenerateFromPassword([]byte("bench-password"), bcrypt.DefaultCost)
	check(err)
	basic := "Basic " + basicAuth("bench", "bench-password")

	selected := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		selected[strings.TrimSpace(n)] = true
	}
	redisAddr, stopRedis, redisNote := startRedis(work)
	defer stopRedis()
	if redisAddr != "" {
		loadKeysIntoRedis(redisAddr, records)
	}

	results := map[string][]result{}
	for round := 1; round <= *rounds; round++ {
		for _, c := range configs {
			if !selected[c.name] || (c.needsRedis && redisAddr == "") {
				continue
			}
			// Every configuration gets the same request, key included; only
			// basic_auth needs its own header.
			headers := func(i int) (string, string) { return "Authorization", auths[i%len(auths)] }
			switch c.name {
			case "d":
				headers = func(int) (string, string) { return "Authorization", basic }
			}
			prof := ""
			if slices.Contains(strings.Split(*profile, ","), c.name) && round == *rounds {
				prof = filepath.Join("bench", "profile-"+c.name+".txt")
			}
			r := runConfig(bin, work, c, upstream, keyFile, redisAddr, string(hash), headers, *nkeys, *concurrency, *warmup, *duration, prof)
			log.Printf("round %d %s: %.0f req/s, p50 %v, p99 %v, %v CPU/request, %d errors", round, c.name, r.rps, r.p50, r.p99, r.cpuPerReq, r.errors)
			results[c.name] = append(results[c.name], r)
		}
	}
	writeResults(*out, results, *rounds, *concurrency, *nkeys, *duration, strings.TrimSpace(string(version)), redisNote)
	log.Printf("wrote %s", *out)
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

// cpuTime is a process's CPU time so far (user and system), from
// /proc/<pid>/stat; 0 where there is no /proc.
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces, in parentheses.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(fields) < 13 {
		return 0
	}
	var utime, stime int64
	fmt.Sscan(fields[11], &utime)
	fmt.Sscan(fields[12], &stime)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond
}

func basicAuth(user, pass string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// startRedis runs redis-server on a free loopback port, if it is installed.
func startRedis(dir string) (addr string, stop func(), note string) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", func() {}, "(e) was not run: redis-server is not installed."
	}
	port := freePort()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	check(cmd.Start())
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	waitPort(addr)
	return addr, func() { cmd.Process.Kill(); cmd.Wait() }, ""
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

// runConfig starts Caddy with one configuration, warms it up, measures,
// and stops it. Each run has its own data directory, so counts start at zero.
func runConfig(bin, work string, c config, upstream, keyFile, redisAddr, hash string,
	header func(int) (string, string), nkeys, concurrency int, warmup, duration time.Duration, profileTo string) result {
	cmd, port, adminPort, stop := startCaddy(bin, work, c.name, c.caddyfile, profileTo != "", upstream, keyFile, redisAddr, hash)
	defer stop()
	url := fmt.Sprintf("http://127.0.0.1:%d/api/tags", port)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency, DisableCompression: true}}
	if strings.Contains(c.caddyfile, "keys redis") {
		// Warm the key cache one key at a time: one address may have only
		// 8 keys waiting on Redis at once (the per-address cap), and the
		// figure is the cost with the cache warm.
		for i := range nkeys {
			req, _ := http.NewRequest("GET", url, nil)
			name, value := header(i)
			req.Header.Set(name, value)
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	load(client, url, header, concurrency, warmup, nil)
	profiled := make(chan []byte, 1)
	if profileTo != "" {
		go func() {
			profiled <- fetchProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", adminPort, max(int(duration.Seconds())-1, 1)))
		}()
	} else {
		profiled <- nil
	}
	var lat [][]time.Duration
	cpuBefore := cpuTime(cmd.Process.Pid)
	errs, n := load(client, url, header, concurrency, duration, &lat)
	cpuUsed := cpuTime(cmd.Process.Pid) - cpuBefore
	if raw := <-profiled; raw != nil {
		writeProfile(bin, raw, profileTo) // after the load: pprof's own work must not disturb it
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{rps: float64(n) / duration.Seconds(), errors: errs}
	if n > 0 {
		r.cpuPerReq = cpuUsed / time.Duration(n)
	}
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return r
}

// startCaddy starts Caddy in a data directory of its own with a site on a
// free port whose body is the template body (see config.caddyfile), with
// the admin endpoint on (for /debug/pprof) when admin is set, and waits
// for it to listen. stop ends it and removes the directory.
func startCaddy(bin, work, name, body string, admin bool, args ...any) (cmd *exec.Cmd, port, adminPort int, stop func()) {
	dir, err := os.MkdirTemp(work, name+"-")
	check(err)
	port, adminPort = freePort(), freePort()
	adminAddr := "off"
	if admin {
		adminAddr = fmt.Sprintf("127.0.0.1:%d", adminPort)
	}
	site := fmt.Sprintf("{\n\tadmin "+adminAddr+"\n\tpersist_config off\n\tlog {\n\t\tlevel ERROR\n\t}\n}\nhttp://127.0.0.1:%[1]d {"+body+"\n}\n",
		append([]any{port}, args...)...)
	cfg := filepath.Join(dir, "Caddyfile")
	check(os.WriteFile(cfg, []byte(site), 0o600))
	cmd = exec.Command(bin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	check(cmd.Start())
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		os.RemoveAll(dir)
	}
	waitPort(fmt.Sprintf("127.0.0.1:%d", port))
	return cmd, port, adminPort, stop
}

// fetchProfile takes a CPU profile through Caddy's admin endpoint.
func fetchProfile(url string) []byte {
	resp, err := http.Get(url)
	if err != nil {
		log.Printf("profile: %v", err)
		return nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Printf("profile: %v", err)
		return nil
	}
	return data
}

// writeProfile writes a profile's top functions as text.
func writeProfile(bin string, data []byte, to string) {
	// The handler's own share first (under apikey's ServeHTTP, leaving out
	// reverse_proxy, which it calls), then the whole process.
	writeProfileFocus(bin, data, to, `apikey\.\(\*Handler\)\.ServeHTTP`, "reverseproxy",
		"The apikey handler's own work (-focus apikey.(*Handler).ServeHTTP -ignore reverseproxy)")
}

// writeProfileFocus writes the top functions under focus (less those under
// ignore, when set), then those of the whole process, as text.
func writeProfileFocus(bin string, data []byte, to, focus, ignore, title string) {
	raw := to + ".pb.gz"
	check(os.WriteFile(raw, data, 0o644))
	defer os.Remove(raw)
	args := []string{"tool", "pprof", "-top", "-cum", "-nodecount", "30", "-focus", focus}
	if ignore != "" {
		args = append(args, "-ignore", ignore)
	}
	mine, err := exec.Command("go", append(args, bin, raw)...).CombinedOutput()
	if err != nil {
		log.Printf("pprof: %v\n%s", err, mine)
		return
	}
	all, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount", "40", bin, raw).CombinedOutput()
	if err != nil {
		log.Printf("pprof: %v\n%s", err, all)
		return
	}
	out := append([]byte("# "+title+"\n\n"), mine...)
	out = append(out, []byte("\n# The whole Caddy process (-top -cum)\n\n")...)
	out = append(out, all...)
	check(os.WriteFile(to, out, 0o644))
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
			myErrs := 0
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
				if lat != nil {
					mine = append(mine, time.Since(start))
				}
			}
			mu.Lock()
			perWorker[w] = mine
			errs += myErrs
			n += len(mine)
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
	return s[len(s)/2]
}

func writeResults(path string, results map[string][]result, rounds, concurrency, nkeys int, duration time.Duration, version, note string) {
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Load benchmark results\n\n")
	fmt.Fprintf(&b, "Written by `go run ./bench` on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Machine: %d CPUs (%s), %s/%s; the load generator, the upstream and Caddy share them.\n", runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "- Go: %s. Caddy: %s.\n", runtime.Version(), version)
	fmt.Fprintf(&b, "- %d interleaved rounds; each run %v at %d requests in flight, keep-alive, over %d key ids.\n\n", rounds, duration, concurrency, nkeys)
	fmt.Fprintf(&b, "| config | what | Caddy CPU per request | over (a) | median req/s | ratio to (a) | p50 | p99 | p99 vs (a) | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	base := results["a"]
	for _, c := range configs {
		rs := results[c.name]
		if len(rs) == 0 {
			continue
		}
		var rps []float64
		var p50, p99 []time.Duration
		var ratios, p99ratios []float64
		var cpus, cpuOver []time.Duration
		errs := 0
		for i, r := range rs {
			cpus = append(cpus, r.cpuPerReq)
			if i < len(base) {
				cpuOver = append(cpuOver, r.cpuPerReq-base[i].cpuPerReq)
			}
			rps = append(rps, r.rps)
			p50 = append(p50, r.p50)
			p99 = append(p99, r.p99)
			errs += r.errors
			if i < len(base) && base[i].rps > 0 {
				ratios = append(ratios, r.rps/base[i].rps)
				p99ratios = append(p99ratios, float64(r.p99)/float64(base[i].p99))
			}
		}
		ratio, p99ratio := "-", "-"
		if len(ratios) > 0 {
			ratio = fmt.Sprintf("%.3f", median(ratios))
			p99ratio = fmt.Sprintf("%+.1f %%", 100*(median(p99ratios)-1))
		}
		over := "-"
		if len(cpuOver) > 0 {
			over = fmt.Sprintf("%+.1f µs", float64(median(cpuOver))/float64(time.Microsecond))
		}
		fmt.Fprintf(&b, "| (%s) | %s | %.1f µs | %s | %.0f | %s | %v | %v | %s | %d |\n", c.name, c.title,
			float64(median(cpus))/float64(time.Microsecond), over, median(rps), ratio,
			median(p50).Round(time.Microsecond), median(p99).Round(time.Microsecond), p99ratio, errs)
	}
	fmt.Fprintf(&b, "\nThe figure of record is Caddy's CPU time per request (user and system, read from /proc/<pid>/stat around each measured run) and its difference from (a) in the same round, the median over rounds; the ratio of requests/s to that round's (a) is beside it. On a shared 2-core machine absolute numbers drift; differences and ratios from interleaved runs hold.\n")
	if note != "" {
		fmt.Fprintf(&b, "\n%s\n", note)
	}
	// The streaming mode's sections, written by go run ./bench -stream,
	// stay: they come last.
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), "\n"+streamHeading); i >= 0 {
			fmt.Fprintf(&b, "%s", old[i:])
		}
	}
	check(os.WriteFile(path, []byte(b.String()), 0o644))
}
