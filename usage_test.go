package apikey

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestUsageSurvivesRestart: usage counts are saved at shutdown and loaded.
func TestUsageSurvivesRestart(t *testing.T) {
	g := gatewaytest.StartOps(t, gatewaytest.OpsOptions{})
	gatewaytest.Send(t, "GET", g.Base+"/ollama/api/tags", g.Keys["reader"].Bearer()...)
	gatewaytest.Send(t, "GET", g.Base+"/ollama/api/tags", g.Keys["reader"].Bearer()...)
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(g.Usage)
	if err != nil || !bytes.Contains(data, []byte(`"k_ops_reader"`)) {
		t.Fatalf("usage not saved at shutdown: %v", err)
	}
	gatewaytest.Start(t, g.Config)
	gatewaytest.Send(t, "GET", g.Base+"/ollama/api/tags", g.Keys["reader"].Bearer()...)
	_, body := gatewaytest.Admin(t, "GET", g.Admin, "/apikey/usage?key=k_ops_reader")
	if !regexp.MustCompile(`"requests":\s*3`).MatchString(body) {
		t.Errorf("usage after a restart: %s", body)
	}
}

// TestUsageStaysBoundedUnderDistinctPaths: one valid key sending 20,000
// requests, each with a new 20 KB path segment, through the built Caddy,
// leaves its memory within 20 MB of where it was and its usage file under
// 1 MB, and /apikey/usage answers in pages. Under -short it sends 5,000
// (100 MB of distinct paths: kept, they would still pass the bound).
func TestUsageStaysBoundedUnderDistinctPaths(t *testing.T) {
	gatewaytest.ParallelWhenShort(t)
	distinct := 20000
	if testing.Short() {
		distinct = 5000
	}
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_cardinality", Role: "reader", QuotaPerDay: int64p(1_000_000)})
	up := gatewaytest.NewUpstream(t)
	dir := t.TempDir()
	port, adminPort := gatewaytest.Port(t), gatewaytest.Port(t)
	usageFile := filepath.Join(dir, "usage.json")
	cmd := gatewaytest.StartProcess(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	servers {
		max_header_size 64KB
	}
}
http://127.0.0.1:%d {
	handle_path /ollama/* {
		apikey {
			keys file %s
			service ollama
			usage_file %s
			failed_auth_limit off
		}
		reverse_proxy %s
	}
}`, adminPort, port, gatewaytest.WriteKeyFile(t, func() keystore.Record { r := key.Record; r.Services = []string{"*"}; return r }()), usageFile, up.Addr()))

	segment := strings.Repeat("y", 20<<10)
	run := func(from, n int) {
		t.Helper()
		const workers = 4
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				for i := from + w; i < from+n; i += workers {
					req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/ollama/x%07d%s/b", port, i, segment), nil)
					req.Header.Set("Authorization", "Bearer "+key.Secret)
					resp, err := gatewaytest.Client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						errs <- fmt.Errorf("request %d: %d", i, resp.StatusCode)
						return
					}
				}
				errs <- nil
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	run(0, 2000) // warm up: buffers, pools and the heap reach their working size
	before := rssOf(t, cmd.Process.Pid)
	run(2000, distinct)
	after := rssOf(t, cmd.Process.Pid)
	t.Logf("RSS %d MB before, %d MB after %d distinct 20 KB paths", before>>20, after>>20, distinct)
	if after-before > 20<<20 {
		t.Errorf("RSS grew by %d MB, want under 20 MB", (after-before)>>20)
	}

	status, body := gatewaytest.Admin(t, "GET", fmt.Sprintf("http://127.0.0.1:%d", adminPort), "/apikey/usage?key=k_cardinality&limit=50")
	var page struct {
		Rows []struct {
			Endpoint string `json:"endpoint"`
			Requests int64  `json:"requests"`
		} `json:"rows"`
		Next string `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(body), &page); status != 200 || err != nil {
		t.Fatalf("usage: %d %v", status, err)
	}
	if len(page.Rows) == 0 || len(page.Rows) > 50 {
		t.Errorf("a page of %d rows, want 1 to 50", len(page.Rows))
	}
	var total int64
	for _, r := range page.Rows {
		total += r.Requests
		if len(r.Endpoint) > 100 {
			t.Errorf("an endpoint of %d bytes is counted", len(r.Endpoint))
		}
	}
	// The long segments all count as ":id": one counter, every request in it.
	if total != int64(2000+distinct) || page.Next != "" {
		t.Errorf("usage counts %d requests in %d rows (more pages: %v), want %d in one page", total, len(page.Rows), page.Next != "", 2000+distinct)
	}

	// A clean stop saves the usage file.
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	info, err := os.Stat(usageFile)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() > 1<<20 {
		t.Errorf("usage file is %d KB, want under 1 MB", info.Size()>>10)
	}
}

// rssOf reads a process's resident memory from /proc.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc to read memory from: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestUsageSavedEveryInterval: with usage_save_interval 200ms the usage
// file holds a request well before the default 10 s save; an interval
// under 100ms is refused, naming the field.
func TestUsageSavedEveryInterval(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_save_interval", Role: "reader"})
	usageFile := filepath.Join(t.TempDir(), "usage.json")
	port := gatewaytest.Port(t)
	site := func(interval string) string {
		return fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	apikey {
		keys file %s
		usage_file %s
		usage_save_interval %s
	}
	respond ok
}`, port, gatewaytest.WriteKeyFile(t, key.Record), usageFile, interval)
	}
	if err := gatewaytest.Load(site("50ms")); err == nil || !strings.Contains(err.Error(), "usage_save_interval must be at least 100ms") {
		t.Fatalf("usage_save_interval 50ms: %v", err)
	}
	gatewaytest.Start(t, site("200ms"))
	gatewaytest.Send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/x", port), key.Bearer()...)
	gatewaytest.WaitUntil(t, "the request in the usage file", 5*time.Second, func() bool {
		return fileUsage(usageFile, key.Record.ID) == 1
	})
}
