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
	if out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", auditLog); code != 0 {
		t.Errorf("audit verify: exit %d %s%s", code, out, errOut)
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
