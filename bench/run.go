package main

// One run: Caddy in one configuration and view, warmed up, then measured.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log"
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
)

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int
	requests int
	// cpuPerReq is Caddy's CPU time (user and system, from /proc) per
	// request served in the measured run; 0 where /proc is missing.
	cpuPerReq time.Duration
	// allocsPerReq and bytesPerReq are Caddy's heap allocations per
	// request in the measured run (runtime.MemStats' Mallocs and
	// TotalAlloc, read through the admin endpoint's /debug/vars); gcs is
	// the collections it ran meanwhile.
	allocsPerReq, bytesPerReq float64
	gcs                       uint32
}

// runConfig starts Caddy with configuration c in view v, warms it up,
// measures, and stops it. Each run has its own data directory, so counts
// start at zero. With prof, the measured run is also profiled, and the
// profiles written to prof.to.
func runConfig(bin, work string, v view, c config, env *environment, o options, prof *profiling) result {
	var gctrace *lineLog
	var extraEnv []string
	if prof != nil {
		// gctrace: a line per collection; memprofilerate: an allocation
		// sample every 8 KiB instead of 512 KiB, for allocation sites
		// accurate over a few seconds.
		extraEnv = []string{"GODEBUG=gctrace=1,memprofilerate=8192"}
		gctrace = new(lineLog)
	}
	cmd, port, adminPort, stop := startCaddyIn(v, bin, work, c.name, c.caddyfile, extraEnv, gctrace,
		env.upstream, env.keyFile, env.redisAddr, env.hash)
	defer stop()
	url := fmt.Sprintf("http://127.0.0.1:%d/api/tags", port)
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	header := env.header(c)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.concurrency, MaxConnsPerHost: o.concurrency, DisableCompression: true}}
	defer client.CloseIdleConnections()
	if strings.Contains(c.caddyfile, "keys redis") {
		// Warm the key cache one key at a time: one address may have only
		// 8 keys waiting on Redis at once (the per-address cap), and the
		// figure is the cost with the cache warm.
		for i := range len(env.auths) {
			req, _ := http.NewRequest("GET", url, nil)
			name, value := header(i)
			req.Header.Set(name, value)
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	load(client, url, header, o.concurrency, o.warmup, nil)

	var snap *snapshot
	if prof != nil {
		snap = prof.start(admin, o.duration, gctrace)
	}
	var lat [][]time.Duration
	memBefore := memStats(admin)
	cpuBefore := cpuTime(cmd.Process.Pid)
	errs, n := load(client, url, header, o.concurrency, o.duration, &lat)
	cpuUsed := cpuTime(cmd.Process.Pid) - cpuBefore
	memAfter := memStats(admin)

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{rps: float64(n) / o.duration.Seconds(), errors: errs, requests: n}
	if n > 0 {
		r.cpuPerReq = cpuUsed / time.Duration(n)
		if memBefore != nil && memAfter != nil {
			r.allocsPerReq = float64(memAfter.Mallocs-memBefore.Mallocs) / float64(n)
			r.bytesPerReq = float64(memAfter.TotalAlloc-memBefore.TotalAlloc) / float64(n)
			r.gcs = memAfter.NumGC - memBefore.NumGC
		}
	}
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	if prof != nil {
		prof.finish(bin, snap, v, c, o, r, cpuUsed, memBefore, memAfter)
	}
	return r
}

// startCaddy starts Caddy, cores shared; see startCaddyIn.
func startCaddy(bin, work, name, body string, args ...any) (cmd *exec.Cmd, port, adminPort int, stop func()) {
	return startCaddyIn(view{}, bin, work, name, body, nil, nil, args...)
}

// startCaddyIn starts Caddy in view v, in a data directory of its own,
// with a site on a free port whose body is the template body (see
// config.caddyfile) and the admin endpoint on a free port (for /debug/vars
// and /debug/pprof), and waits for it to listen. env is added to its
// environment; with stderr, the lines Caddy writes there are kept. stop
// ends it and removes the directory.
func startCaddyIn(v view, bin, work, name, body string, env []string, stderr *lineLog, args ...any) (cmd *exec.Cmd, port, adminPort int, stop func()) {
	dir, err := os.MkdirTemp(work, name+"-")
	check(err)
	port, adminPort = freePort(), freePort()
	site := fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tpersist_config off\n\tlog {\n\t\tlevel ERROR\n\t}\n}\n", adminPort) +
		fmt.Sprintf("http://127.0.0.1:%[1]d {"+body+"\n}\n", append([]any{port}, args...)...)
	cfg := filepath.Join(dir, "Caddyfile")
	check(os.WriteFile(cfg, []byte(site), 0o600))
	argv := v.caddyCommand(bin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd = exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout = io.Discard
	var copied sync.WaitGroup
	if stderr == nil {
		cmd.Stderr = io.Discard
	} else {
		pipe, err := cmd.StderrPipe()
		check(err)
		copied.Add(1)
		go func() {
			defer copied.Done()
			stderr.readFrom(pipe)
		}()
	}
	check(cmd.Start())
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { copied.Wait(); cmd.Wait(); close(done) }()
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

// lineLog keeps the lines a process writes.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) readFrom(r io.Reader) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, s.Text())
		l.mu.Unlock()
	}
}

// mark is the number of lines so far.
func (l *lineLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// since returns the lines after mark.
func (l *lineLog) since(mark int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines[mark:])
}

// memStats reads Caddy's runtime.MemStats from its admin endpoint's
// /debug/vars (expvar), or nil.
func memStats(admin string) *runtime.MemStats {
	resp, err := http.Get(admin + "/debug/vars")
	if err != nil {
		log.Printf("memstats: %v", err)
		return nil
	}
	defer resp.Body.Close()
	var vars struct {
		MemStats *runtime.MemStats `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		log.Printf("memstats: %v", err)
		return nil
	}
	return vars.MemStats
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
