package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func appendOrFail(t *testing.T, path string, events ...string) {
	t.Helper()
	for _, ev := range events {
		if err := Append(path, Entry{"event": ev}); err != nil {
			t.Fatal(err)
		}
	}
}

func checkFile(t *testing.T, path string, heads ...Head) (Result, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Check(bytes.NewReader(data), heads...)
}

func lineOf(t *testing.T, path string, n int) string {
	t.Helper()
	data, _ := os.ReadFile(path)
	lines := strings.Split(string(data), "\n")
	if n > len(lines) {
		t.Fatalf("%d lines, want line %d", len(lines), n)
	}
	return lines[n-1]
}

// TestTornLineIsClosedOff: a last line a write left without its newline
// does not stop the log: the next append closes it off, names it in an
// audit.recovered entry and goes on; the log verifies, and editing the torn
// line or its recovery entry still breaks it.
func TestTornLineIsClosedOff(t *testing.T) {
	for name, before := range map[string][]string{"after lines": {"a", "b"}, "alone": nil} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			appendOrFail(t, path, before...)
			torn := `{"event":"request.denied","path":"/api/ta`
			f, _ := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			f.WriteString(torn) // a full disk cut this write short
			f.Close()
			if _, err := checkFile(t, path); err == nil || !strings.Contains(err.Error(), "incomplete") {
				t.Fatalf("a torn last line, not yet closed off: %v", err)
			}

			appendOrFail(t, path, "c", "d")
			n := len(before) + 1
			if got := lineOf(t, path, n); got != torn {
				t.Fatalf("line %d is %q, want the torn line kept as it was", n, got)
			}
			rec := lineOf(t, path, n+1)
			for _, want := range []string{`"event":"audit.recovered"`, `"torn_line":` + strconv.Itoa(n), `"torn_bytes":` + strconv.Itoa(len(torn))} {
				if !strings.Contains(rec, want) {
					t.Errorf("line %d lacks %s: %s", n+1, want, rec)
				}
			}
			res, err := checkFile(t, path)
			if err != nil || res.Head.Lines != int64(n+3) || res.TornLines != 1 || res.Torn[0] != int64(n) {
				t.Fatalf("check: %+v, %v", res, err)
			}
			head, recorded, err := ReadHead(path)
			if err != nil || !recorded || head != res.Head {
				t.Errorf("recorded head %+v (recorded %v, %v), the log's is %+v", head, recorded, err, res.Head)
			}

			data, _ := os.ReadFile(path)
			for what, tampered := range map[string]string{
				"torn line edited":       strings.Replace(string(data), "/api/ta", "/api/xx", 1),
				"recovery entry removed": strings.Replace(string(data), rec+"\n", "", 1),
				"recovery entry edited":  strings.Replace(string(data), `"torn_line":`+strconv.Itoa(n), `"torn_line":`+strconv.Itoa(n+5), 1),
			} {
				if _, err := Check(strings.NewReader(tampered)); err == nil {
					t.Errorf("%s: the log still verifies", what)
				}
			}
		})
	}
}

// TestHeadFindsCuts: the head recorded beside the log, or elsewhere, finds
// lines cut from the end and an emptied log; a writer that finds the log
// cut says so in the log, and the check fails on it from then on.
func TestHeadFindsCuts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	appendOrFail(t, path, "a", "b", "c", "d")
	head, recorded, err := ReadHead(path)
	if err != nil || !recorded || head.Lines != 4 {
		t.Fatalf("head %+v %v %v", head, recorded, err)
	}
	if res, err := checkFile(t, path, head); err != nil || res.Head != head {
		t.Fatalf("whole log against its head: %+v %v", res, err)
	}
	byHash := Head{Lines: AnyLine, SHA256: head.SHA256}
	if _, err := checkFile(t, path, byHash); err != nil {
		t.Fatalf("whole log against its head's hash: %v", err)
	}
	data, _ := os.ReadFile(path)
	cut := data[:bytes.LastIndexByte(data[:len(data)-1], '\n')+1]
	for name, c := range map[string]struct {
		content []byte
		head    Head
		want    string
	}{
		"last line cut":      {cut, head, "the log has 3 lines, but the recorded head 4:"},
		"last line cut, sha": {cut, byHash, "no line has the recorded head's sha256"},
		"emptied":            {nil, head, "the log has 0 lines"},
		"rewritten":          {append(append([]byte{}, cut...), []byte(`{"event":"x","prev":"`+lineHash(cut[bytes.LastIndexByte(cut[:len(cut)-1], '\n')+1:len(cut)-1])+`"}`+"\n")...), head, "line 4: is not the recorded head"},
	} {
		if _, err := Check(bytes.NewReader(c.content), c.head); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
		if _, err := Check(bytes.NewReader(c.content)); err != nil {
			t.Errorf("%s: the chain alone should not see it: %v", name, err)
		}
	}

	// Cut the log and append: the writer notices and says so.
	os.WriteFile(path, cut, 0o600)
	appendOrFail(t, path, "e")
	if got := lineOf(t, path, 4); !strings.Contains(got, `"event":"audit.truncated"`) || !strings.Contains(got, `"head_lines":4`) || !strings.Contains(got, `"lines_found":3`) {
		t.Fatalf("line 4 after a cut: %s", got)
	}
	if _, err := checkFile(t, path); err == nil || !strings.Contains(err.Error(), "line 4: the log's writer found it cut here") {
		t.Errorf("check after a cut and an append: %v", err)
	}

	// Emptied: the same.
	os.WriteFile(path, nil, 0o600)
	appendOrFail(t, path, "f")
	if got := lineOf(t, path, 1); !strings.Contains(got, `"event":"audit.truncated"`) {
		t.Fatalf("line 1 after emptying: %s", got)
	}

	// Rotation moves the log and its head together: a new log starts clean.
	aside, old, err := Rotate(path, time.Now())
	if err != nil || old.Lines != 2 {
		t.Fatalf("rotate: %v %+v", err, old)
	}
	if _, err := os.Stat(aside + ".head"); err != nil {
		t.Errorf("the head did not move with the log: %v", err)
	}
	appendOrFail(t, path, "g")
	if res, err := checkFile(t, path); err != nil || res.Head.Lines != 1 {
		t.Errorf("new log after a rotation: %+v %v", res, err)
	}
}

// TestHeadWithoutFile: a log written before heads were recorded gets its
// head worked out, and its first append records it.
func TestHeadWithoutFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	appendOrFail(t, path, "a", "b")
	os.Remove(HeadPath(path))
	head, recorded, err := ReadHead(path)
	if err != nil || recorded || head.Lines != 2 {
		t.Fatalf("worked-out head %+v %v %v", head, recorded, err)
	}
	appendOrFail(t, path, "c")
	if head, recorded, _ := ReadHead(path); !recorded || head.Lines != 3 {
		t.Errorf("head after an append: %+v %v", head, recorded)
	}
	if h, _, err := ReadHead(filepath.Join(t.TempDir(), "none.log")); err != nil || h.Lines != 0 || h.SHA256 != Genesis {
		t.Errorf("head of a missing log: %+v %v", h, err)
	}
	for _, s := range []string{"3:" + Genesis, Genesis} {
		if _, err := ParseHead(s); err != nil {
			t.Errorf("ParseHead(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "x:" + Genesis, "-1:" + Genesis, "3:abc", strings.ToUpper(lineHash([]byte("x")))} {
		if _, err := ParseHead(s); err == nil {
			t.Errorf("ParseHead(%q) accepted it", s)
		}
	}
}

// TestWriterRetriesAndLogsSparingly: a batch that cannot be written is
// tried again until it can, in order; each failure is counted, and logged
// at most once per interval with the number not logged since.
func TestWriterRetriesAndLogsSparingly(t *testing.T) {
	defer func(r, l time.Duration) { retryEvery, logEvery = r, l }(retryEvery, logEvery)
	retryEvery, logEvery = 20*time.Millisecond, 400*time.Millisecond

	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.Mkdir(path, 0o700); err != nil { // a folder where the log belongs: appends fail
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	w := NewWriter(path, func() *zap.Logger { return zap.New(core) })
	errors0 := WriteErrors()
	w.Log(Entry{"event": "first"})
	time.Sleep(600 * time.Millisecond)
	failures := WriteErrors() - errors0
	logged := logs.FilterMessage("writing the audit log failed; retrying").All()
	if failures < 5 {
		t.Errorf("%d failures counted in 600 ms with a retry every 20 ms", failures)
	}
	if len(logged) != 2 {
		t.Fatalf("failure logged %d times in 600 ms, want twice (once per 400 ms)", len(logged))
	}
	if n := logged[1].ContextMap()["failures_not_logged"].(int64); n < 3 {
		t.Errorf("the second failure line says %d were not logged", n)
	}

	w.Log(Entry{"event": "second"})
	os.Remove(path) // the folder goes: the next try writes
	deadline := time.Now().Add(2 * time.Second)
	for logs.FilterMessage("writing the audit log works again").Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	w.Close()
	res, err := checkFile(t, path)
	if err != nil || res.Head.Lines != 2 {
		t.Fatalf("after the failures: %+v %v", res, err)
	}
	if !strings.Contains(lineOf(t, path, 1), `"first"`) || !strings.Contains(lineOf(t, path, 2), `"second"`) {
		t.Error("entries out of order after the retries")
	}
	if logs.FilterMessage("writing the audit log works again").Len() != 1 {
		t.Error("no line says writing works again")
	}
}

// TestCollector: the failure count is exposed as
// caddy_apikey_audit_write_errors_total, for a config's registry.
func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(Collector()); err != nil {
		t.Fatal(err)
	}
	writeErrors.Add(1)
	families, err := reg.Gather()
	if err != nil || len(families) != 1 || families[0].GetName() != "caddy_apikey_audit_write_errors_total" ||
		families[0].GetMetric()[0].GetCounter().GetValue() != float64(WriteErrors()) {
		t.Fatalf("gathered %v, %v; want the counter at %d", families, err, WriteErrors())
	}
}
