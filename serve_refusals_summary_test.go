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
	// A line still being written (no newline yet) is read next time.
	data = data[:strings.LastIndexByte(string(data), '\n')+1]
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
	summaryEvery = 2 * time.Second
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
	// 300 refusals from 300 addresses of 198.51.0.0/16 (past the 100 of a
	// kind). However the intervals fall on them (a loaded machine is slow),
	// each interval writes at most 100 on their own and summarises the rest:
	// written and summarised add up to 300, and no refusal is lost.
	start := time.Now()
	for round := 1; round <= 2; round++ {
		for i := range 150 {
			gatewaytest.Send(t, "GET", g.url+"/ollama/x", "X-Forwarded-For", fmt.Sprintf("198.51.%d.%d", round, i+1))
		}
	}
	intervals := int(time.Since(start)/summaryEvery) + 2 // the ones the requests touched
	var written, summarised int
	account := func() {
		written, summarised = 0, 0
		for _, e := range jsonLines(t, auditLog) {
			switch e["event"] {
			case "request.denied":
				written++
			case "request.denied.summary":
				summarised += int(e["refused"].(float64))
			}
		}
	}
	gatewaytest.WaitUntil(t, "every refusal written or summarised", summaryEvery+10*time.Second, func() bool {
		account()
		return written+summarised == 300
	})
	got := summaries()
	if len(got) == 0 {
		t.Fatal("no summary in the log while Caddy runs")
	}
	inLog := 0
	for _, s := range got {
		n := s["refused"].(float64)
		inLog += int(n)
		if n <= 0 || s["by_reason"].(map[string]any)["missing_key"] != n || s["by_prefix"].(map[string]any)["198.51.0.0/16"] != n || s["written"].(float64) > anonPerInterval {
			t.Errorf("summary %v: want its refusals all missing_key from 198.51.0.0/16, after at most %d written", s, anonPerInterval)
		}
	}
	if inLog != summarised {
		t.Errorf("the log's summaries count %d refusals, the audit log's %d", inLog, summarised)
	}
	if written > intervals*anonPerInterval {
		t.Errorf("%d request.denied entries in %d intervals, want at most %d", written, intervals, intervals*anonPerInterval)
	}
}
