package apikey

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// jsonLines reads a file of JSON lines; a missing file has none.
func jsonLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %v", err)
		}
		out = append(out, m)
	}
	return out
}

// TestRefusalsOfUnknownKeysDuringAnOutageAreSummarised: with the key
// source (Redis) down, 2,000 made-up keys from one address get 503 each,
// but write at most the interval's budget of "request denied" lines and
// request.denied audit entries; the rest are in one summary line and one
// request.denied.summary entry that carry their number by reason and by
// network.
func TestRefusalsOfUnknownKeysDuringAnOutageAreSummarised(t *testing.T) {
	srv := redistest.Start(t)
	up := gatewaytest.NewUpstream(t)
	dir := t.TempDir()
	logPath, auditLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "audit.log")
	port := gatewaytest.Port(t)
	gatewaytest.Start(t, fmt.Sprintf(`{
	admin off
	persist_config off
	log {
		output file %[5]s
		format json
	}
}
http://127.0.0.1:%[1]d {
	apikey {
		keys redis {
			address %[2]s
			timeout 500ms
		}
		counters memory
		audit_log %[4]s
	}
	reverse_proxy %[3]s
}`, port, srv.Addr(), up.Addr(), auditLog, logPath))
	srv.Kill()

	const sent = 2000
	keys := make([]string, sent)
	for i := range keys {
		k, err := keystore.Generate(keystore.Dev)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	statuses := map[int]int{}
	for _, k := range keys { // one after another, as one client would
		statuses[gatewaytest.Send(t, "GET", url, "Authorization", "Bearer "+k).Status]++
	}
	if statuses[503] != sent {
		t.Fatalf("made-up keys with Redis down: %v, want %d × 503", statuses, sent)
	}
	if err := gatewaytest.Stop(); err != nil { // ends the interval: the summary is written
		t.Fatal(err)
	}

	var denied, summaries int
	var summarised float64
	for _, l := range jsonLines(t, logPath) {
		switch l["msg"] {
		case "request denied":
			denied++
		case "requests denied, summarised":
			summaries++
			summarised += l["refused"].(float64)
			if n := l["by_reason"].(map[string]any)["unavailable"]; n != l["refused"] {
				t.Errorf("summary line by reason: %v, want all %v unavailable", l["by_reason"], l["refused"])
			}
			if n := l["by_prefix"].(map[string]any)["127.0.0.0/16"]; n != l["refused"] {
				t.Errorf("summary line by prefix: %v, want all %v from 127.0.0.0/16", l["by_prefix"], l["refused"])
			}
		}
	}
	if denied > anonPerInterval || summaries != 1 || int(summarised)+denied != sent {
		t.Errorf("log: %d request denied lines (want at most %d) and %d summaries of %v refusals (want 1 of the %d others)",
			denied, anonPerInterval, summaries, summarised, sent-denied)
	}

	var auditDenied, auditSummaries int
	for _, e := range jsonLines(t, auditLog) {
		switch e["event"] {
		case "request.denied":
			auditDenied++
		case "request.denied.summary":
			auditSummaries++
			if e["refused"].(float64)+float64(auditDenied) != sent || e["by_reason"].(map[string]any)["unavailable"] != e["refused"] {
				t.Errorf("audit summary %v after %d entries, want the other refusals of %d", e, auditDenied, sent)
			}
		}
	}
	if auditDenied > anonPerInterval || auditSummaries != 1 {
		t.Errorf("audit log: %d request.denied entries (want at most %d) and %d summaries (want 1)", auditDenied, anonPerInterval, auditSummaries)
	}
	if out, errOut, code := cli(t, "", "audit", "verify", auditLog); code != 0 {
		t.Errorf("audit verify: exit %d %s%s", code, out, errOut)
	}
}

// TestFailedAuthThrottlesWideNetworks: a client with many addresses, each
// under failed_auth_limit (many /64s of one IPv6 /48, many IPv4 addresses
// of one /16, through trusted_proxies), is throttled on its network once
// failed_auth_prefix_limit is reached: a valid key from another address of
// that network gets 429, one from elsewhere does not. Its refusals write
// at most the interval's budget of lines.
func TestFailedAuthThrottlesWideNetworks(t *testing.T) {
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_wide", Role: "reader", Services: []string{"*"}})
	dir := t.TempDir()
	logPath := filepath.Join(dir, "caddy.log")
	g := &quotaGateway{up: gatewaytest.NewUpstream(t), counters: filepath.Join(dir, "counters.json")}
	port := gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := quotaSite(port, gatewaytest.WriteKeyFile(t, key.Record), g.counters, g.up.Addr(), "failed_auth_limit 5/m\n\t\t\tfailed_auth_prefix_limit 50/m /16 /48")
	cfg = strings.Replace(cfg, "persist_config off", "persist_config off\n\tlog {\n\t\toutput file "+logPath+"\n\t\tformat json\n\t}", 1)
	gatewaytest.Start(t, cfg)
	from := func(ip string, h ...string) gatewaytest.Response {
		return gatewaytest.Send(t, "GET", g.url+"/ollama/x", append([]string{"X-Forwarded-For", ip}, h...)...)
	}

	for _, c := range []struct {
		name            string
		attacker        func(i int) string
		neighbour, away string
	}{
		{"IPv6 /64s of one /48", func(i int) string { return fmt.Sprintf("2001:db8:7:%x::1", i) }, "2001:db8:7:ffff::9", "2001:db8:8::1"},
		{"IPv4 addresses of one /16", func(i int) string { return fmt.Sprintf("10.7.%d.%d", i/200, i%200+1) }, "10.7.250.250", "10.8.0.1"},
	} {
		var throttled int
		for i := range 120 {
			if r := from(c.attacker(i), "X-API-Key", "DEV_API_nonsense"); r.Status == 429 && r.Err.Code == "rate_limited" {
				throttled++
			}
		}
		if throttled != 70 {
			t.Errorf("%s: %d of 120 failures from distinct addresses throttled, want the 70 after the network's 50", c.name, throttled)
		}
		if r := from(c.neighbour, key.Bearer()...); r.Status != 429 {
			t.Errorf("%s: a valid key from the throttled network got %d, want 429", c.name, r.Status)
		}
		if r := from(c.away, key.Bearer()...); r.Status != 200 {
			t.Errorf("%s: a valid key from another network got %d, want 200", c.name, r.Status)
		}
	}
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}
	var denied, throttledLines int
	for _, l := range jsonLines(t, logPath) {
		switch l["msg"] {
		case "request denied":
			denied++
		case "client address throttled after failed authentications":
			throttledLines++
			if l["client"] != "2001:db8:7::/48" && l["client"] != "10.7.0.0/16" {
				t.Errorf("throttled %v, want the /48 or the /16", l["client"])
			}
		}
	}
	if denied > anonPerInterval || throttledLines != 2 {
		t.Errorf("%d request denied lines (want at most %d), %d throttle lines (want 2)", denied, anonPerInterval, throttledLines)
	}
}

// TestAuditLogRollsBySize: with roll_size and roll_keep, the audit log of
// a running Caddy is moved aside once it reaches the size, the new file's
// first line chains to the last of the old one, and only roll_keep rolled
// files stay. `caddy apikey audit verify` checks the log with its rolled
// files (a head recorded in a rolled file too), and fails when a rolled
// file is edited or one between is removed.
func TestAuditLogRollsBySize(t *testing.T) {
	dir := t.TempDir()
	auditLog := filepath.Join(dir, "audit.log")
	key := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_roll", Role: "reader", Services: []string{"*"}})
	g := &quotaGateway{up: gatewaytest.NewUpstream(t), counters: filepath.Join(dir, "counters.json")}
	port := gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	gatewaytest.Start(t, quotaSite(port, gatewaytest.WriteKeyFile(t, key.Record), g.counters, g.up.Addr(),
		"failed_auth_limit off\n\t\t\taudit_log "+auditLog+" {\n\t\t\t\troll_size 2KiB\n\t\t\t\troll_keep 3\n\t\t\t}"))
	head := func() string { data, _ := os.ReadFile(auditLog + ".head"); return string(data) }
	for i := range 90 {
		before := head()
		gatewaytest.Send(t, "GET", g.url+"/ollama/x", "X-Forwarded-For", fmt.Sprintf("192.0.2.%d", i+1))
		if i%10 == 9 { // in several batches, as traffic comes
			for deadline := time.Now().Add(5 * time.Second); head() == before && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	if err := gatewaytest.Stop(); err != nil {
		t.Fatal(err)
	}

	rolled, _ := filepath.Glob(auditLog + ".2*")
	var files []string
	for _, f := range rolled {
		if !strings.HasSuffix(f, ".head") {
			files = append(files, f)
		}
	}
	if len(files) != 3 {
		t.Fatalf("rolled files %v, want roll_keep's 3", files)
	}
	for _, f := range append(files, auditLog) {
		if info, err := os.Stat(f); err != nil || info.Size() > 2048+64<<10 {
			t.Errorf("%s: %v bytes, want about roll_size", f, info.Size())
		}
	}
	first := jsonLines(t, auditLog)[0]
	if first["event"] != "audit.continued" || first["previous_file"] != filepath.Base(files[2]) {
		t.Fatalf("the log's first line after a roll: %v", first)
	}

	var recorded struct {
		Lines  int64  `json:"lines"`
		SHA256 string `json:"sha256"`
	}
	data, _ := os.ReadFile(files[1] + ".head")
	if err := json.Unmarshal(data, &recorded); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cli(t, "", "audit", "verify", "--head", fmt.Sprintf("%d:%s", recorded.Lines, recorded.SHA256), auditLog)
	if code != 0 || strings.Count(out, "(rolled)") != 3 || !strings.Contains(out, "no longer there") {
		t.Fatalf("audit verify across rolled files: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := cli(t, "", "audit", "verify", "--head", "2:"+strings.Repeat("b", 64), auditLog); code != 1 || !strings.Contains(errOut, "in neither the log nor its rolled files") {
		t.Errorf("a head from elsewhere: exit %d %s", code, errOut)
	}

	// An edit in a rolled file breaks its chain.
	original, _ := os.ReadFile(files[1])
	os.WriteFile(files[1], []byte(strings.Replace(string(original), "192.0.2.", "192.0.9.", 1)), 0o600)
	if _, errOut, code := cli(t, "", "audit", "verify", auditLog); code != 1 || !strings.Contains(errOut, filepath.Base(files[1])) {
		t.Errorf("an edited rolled file: exit %d %s", code, errOut)
	}
	os.WriteFile(files[1], original, 0o600)
	// A rolled file removed between others is missed.
	os.Remove(files[1])
	if _, errOut, code := cli(t, "", "audit", "verify", auditLog); code != 1 || !strings.Contains(errOut, "not in its chain") {
		t.Errorf("a rolled file removed: exit %d %s", code, errOut)
	}
}

// TestRefusalSummaryEachInterval: while Caddy runs, the refusals of
// unknown clients past the budget are summarised when their interval ends,
// once per interval, in the log and the audit log, by reason and network.
func TestRefusalSummaryEachInterval(t *testing.T) {
	defer func(d time.Duration) { summaryEvery = d }(summaryEvery)
	summaryEvery = 2 * time.Second // long enough for a round of 150 requests, under -race too
	dir := t.TempDir()
	logPath, auditLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "audit.log")
	g := &quotaGateway{up: gatewaytest.NewUpstream(t), counters: filepath.Join(dir, "counters.json")}
	port := gatewaytest.Port(t)
	g.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := quotaSite(port, gatewaytest.WriteKeyFile(t, gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_unused", Role: "reader"}).Record), g.counters, g.up.Addr(), "failed_auth_limit off\n\t\t\taudit_log "+auditLog)
	cfg = strings.Replace(cfg, "persist_config off", "persist_config off\n\tlog {\n\t\toutput file "+logPath+"\n\t\tformat json\n\t}", 1)
	gatewaytest.Start(t, cfg)

	summaries := func() (lines []map[string]any) {
		for _, l := range jsonLines(t, logPath) {
			if l["msg"] == "requests denied, summarised" {
				lines = append(lines, l)
			}
		}
		return lines
	}
	for round := 1; round <= 2; round++ {
		for i := range 150 { // from 150 addresses of 198.51.0.0/16: past the 100 of a kind
			gatewaytest.Send(t, "GET", g.url+"/ollama/x", "X-Forwarded-For", fmt.Sprintf("198.51.%d.%d", round, i+1))
		}
		for deadline := time.Now().Add(5 * time.Second); len(summaries()) < round && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		got := summaries()
		if len(got) != round {
			t.Fatalf("round %d: %d summaries while Caddy runs, want %d", round, len(got), round)
		}
		s := got[round-1]
		if s["refused"] != 50.0 || s["by_reason"].(map[string]any)["missing_key"] != 50.0 || s["by_prefix"].(map[string]any)["198.51.0.0/16"] != 50.0 {
			t.Errorf("round %d: summary %v, want 50 missing_key from 198.51.0.0/16", round, s)
		}
	}
	audit := gatewaytest.WaitForLog(t, auditLog, "request.denied.summary")
	if n := strings.Count(audit, `"event":"request.denied"`); n > 2*anonPerInterval {
		t.Errorf("%d request.denied entries, want at most %d", n, 2*anonPerInterval)
	}
}
