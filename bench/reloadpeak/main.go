// Command reloadpeak measures the resident memory of a Caddy built from this
// repository holding a key file of a million records (issue 11's target:
// "reload peak ≤ 1.5 × steady"). It writes the key file (the records of
// BenchmarkLoadMillion in keystore/keyfile), starts Caddy on it in a
// temporary home, waits for the load to settle, and reads the process's
// VmRSS (steady) and VmHWM (peak; reset between phases through clear_refs)
// around two phases:
//
//   - a change to the key file seen by the watcher: `caddy apikey revoke`
//     of one key;
//   - a config reload: `caddy reload` with another respond body.
//
// Run it from the repository root (Linux only):
//
//	go build -o /tmp/caddy-m ./cmd/caddy
//	go run ./bench/reloadpeak -caddy /tmp/caddy-m
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

var (
	caddyBin = flag.String("caddy", "/tmp/caddy-m", "the Caddy binary built from this repository")
	records  = flag.Int("n", 1000000, "records in the key file")
	steadyAt = flag.Duration("steady", 20*time.Second, "wait after the load before reading the steady RSS")
	settle   = flag.Duration("settle", 20*time.Second, "wait after each phase before reading RSS")
	gctrace  = flag.Bool("gctrace", false, "run Caddy with GODEBUG=gctrace=1 (in caddy.log)")
	keep     = flag.Bool("keep", false, "keep the temporary directory")
)

func main() {
	flag.Parse()
	dir, err := os.MkdirTemp("", "reloadpeak")
	check(err)
	if !*keep {
		defer os.RemoveAll(dir)
	} else {
		logf("working in %s", dir)
	}
	keys := filepath.Join(dir, "keys.json")
	writeKeyFile(keys, *records)
	st, err := os.Stat(keys)
	check(err)
	logf("key file: %d records, %.0f MB", *records, float64(st.Size())/1e6)

	admin, port := freePort(), freePort()
	adminAddr = fmt.Sprintf("localhost:%d", admin)
	caddyfile := filepath.Join(dir, "Caddyfile")
	writeCaddyfile(caddyfile, admin, port, keys, "one")

	logFile, err := os.Create(filepath.Join(dir, "caddy.log"))
	check(err)
	defer logFile.Close()
	env := append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	if *gctrace {
		env = append(env, "GODEBUG=gctrace=1")
	}
	cmd := exec.Command(*caddyBin, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Env, cmd.Stdout, cmd.Stderr, cmd.Dir = env, logFile, logFile, dir
	start := time.Now()
	check(cmd.Start())
	child = cmd
	defer stopChild()
	pid := cmd.Process.Pid
	url := fmt.Sprintf("http://localhost:%d/", port)
	waitBody(url, "one")
	logf("loaded in %.1f s; peak during load %s", time.Since(start).Seconds(), mb(status(pid, "VmHWM")))

	steady := settleRSS(pid, *steadyAt)
	logf("steady RSS %s", mb(steady))

	// (a) A change seen by the watcher.
	resetHWM(pid)
	reloads := countIn(logFile.Name(), "key file reloaded")
	t := time.Now()
	run(env, dir, *caddyBin, "apikey", "revoke", "--keys", keys, "--id", fmt.Sprintf("k_%07d", *records/2))
	for countIn(logFile.Name(), "key file reloaded") == reloads {
		if time.Since(t) > 2*time.Minute {
			fatal("the watcher did not reload the key file")
		}
		time.Sleep(100 * time.Millisecond)
	}
	logf("file change: reloaded %.1f s after the revoke began", time.Since(t).Seconds())
	afterA := settleRSS(pid, *settle)
	peakA := status(pid, "VmHWM")

	// (b) A config reload.
	resetHWM(pid)
	writeCaddyfile(caddyfile, admin, port, keys, "two")
	t = time.Now()
	run(env, dir, *caddyBin, "reload", "--config", caddyfile, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("localhost:%d", admin))
	waitBody(url, "two")
	logf("config reload: in force after %.1f s", time.Since(t).Seconds())
	afterB := settleRSS(pid, *settle)
	peakB := status(pid, "VmHWM")

	fmt.Printf("\n| phase | peak RSS | peak / steady | RSS after |\n|---|---|---|---|\n")
	fmt.Printf("| loaded, settled (steady) | | | %s |\n", mb(steady))
	fmt.Printf("| key file changed (apikey revoke) | %s | %.2f | %s |\n", mb(peakA), float64(peakA)/float64(steady), mb(afterA))
	fmt.Printf("| config reload | %s | %.2f | %s |\n", mb(peakB), float64(peakB)/float64(steady), mb(afterB))
}

// writeKeyFile writes the records of BenchmarkLoadMillion.
func writeKeyFile(path string, n int) {
	recs := make([]keystore.Record, n)
	for i := range recs {
		k, err := keystore.Generate(keystore.Dev)
		check(err)
		recs[i] = keystore.Record{ID: fmt.Sprintf("k_%07d", i), Hash: keystore.Sum(k).Encode(), Type: "dev",
			Role: "reader", Services: []string{"ollama"}, CreatedAt: "2026-11-27T00:00:00Z"}
	}
	data, err := json.Marshal(map[string]any{"keys": recs})
	check(err)
	check(os.WriteFile(path, data, 0o600))
}

func writeCaddyfile(path string, admin, port int, keys, body string) {
	c := fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
}

http://localhost:%d {
	apikey {
		keys file %s
		service ollama
	}
	respond "%s"
}
`, admin, port, keys, body)
	check(os.WriteFile(path, []byte(c), 0o600))
}

// waitBody waits until the site answers and the config in force (as the
// admin API serves it) responds with body: the respond handler itself is
// only reached with a key.
func waitBody(url, body string) {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if cfg := adminConfig(); strings.Contains(cfg, `"body":"`+body+`"`) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	fatalf("no answer from %s with %q", url, body)
}

var adminAddr string

func adminConfig() string {
	resp, err := http.Get("http://" + adminAddr + "/config/")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// settleRSS waits d and returns the lowest VmRSS of the next few seconds.
func settleRSS(pid int, d time.Duration) int64 {
	time.Sleep(d)
	low := status(pid, "VmRSS")
	for range 5 {
		time.Sleep(time.Second)
		low = min(low, status(pid, "VmRSS"))
	}
	return low
}

// status reads a field of /proc/<pid>/status, in bytes.
func status(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for line := range strings.SplitSeq(string(data), "\n") {
		if name, v, ok := strings.Cut(line, ":"); ok && name == field {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			check(err)
			return kb << 10
		}
	}
	fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// resetHWM sets VmHWM to the current RSS.
func resetHWM(pid int) {
	check(os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0))
}

func countIn(path, s string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte(s))
}

func run(env []string, dir string, name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Env, cmd.Dir = env, dir
	if out, err := cmd.CombinedOutput(); err != nil {
		fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "localhost:0")
	check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func mb(b int64) string { return fmt.Sprintf("%.0f MB", float64(b)/1e6) }

// logf writes to stderr: the standard logger is Caddy's once keystore is
// imported.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// child is Caddy, stopped on the way out.
var child *exec.Cmd

func stopChild() {
	if child != nil {
		_ = child.Process.Kill()
		_, _ = child.Process.Wait()
	}
}

func fatalf(format string, args ...any) {
	logf(format, args...)
	stopChild()
	os.Exit(1)
}

func fatal(args ...any) { fatalf("%s", fmt.Sprint(args...)) }

func check(err error) {
	if err != nil {
		fatal(err)
	}
}
