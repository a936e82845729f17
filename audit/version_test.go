package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// chainedLines writes lines chained as every release writes them: each
// entry gets the "prev" of the line before; the entries' own fields (a
// "v" or none) are kept as given.
func chainedLines(t *testing.T, path string, entries ...map[string]any) {
	t.Helper()
	data, _ := os.ReadFile(path)
	prev := Genesis
	if lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"); len(data) > 0 {
		prev = lineHash([]byte(lines[len(lines)-1]))
	}
	for _, e := range entries {
		e["prev"] = prev
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		data = append(append(data, line...), '\n')
		prev = lineHash(line)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLinesOfOlderReleasesStillVerify: a log v0.1.0 wrote (lines without
// "v", no version in the head) is appended to and verified: the chain goes
// on across the releases, and the new lines and the head say their format.
func TestLinesOfOlderReleasesStillVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	chainedLines(t, path,
		map[string]any{"event": "key.created", "key_id": "k_1", "ts": "2026-12-02T10:00:00Z"},
		map[string]any{"event": "key.revoked", "key_id": "k_1", "ts": "2026-12-02T10:01:00Z"})
	data, _ := os.ReadFile(path)
	os.WriteFile(path+".head", fmt.Appendf(nil, `{"lines":2,"sha256":%q,"size":%d}`+"\n", lineHash([]byte(lineOf(t, path, 2))), len(data)), 0o600)
	if _, err := checkFile(t, path); err != nil {
		t.Fatalf("a log of v0.1.0: %v", err)
	}
	appendOrFail(t, path, "key.created")
	res, err := CheckFiles(path)
	if err != nil || res.Files[0].Head.Lines != 3 {
		t.Fatalf("after an append: %+v, %v", res, err)
	}
	if last := lineOf(t, path, 3); !strings.Contains(last, `"v":1`) {
		t.Errorf("a new line without its format: %s", last)
	}
	head, _ := os.ReadFile(path + ".head")
	if !strings.Contains(string(head), `"version":1`) {
		t.Errorf("the head file without its format: %s", head)
	}
}

// TestNewerFormatIsRefused: a line of a newer format fails verification
// with an error naming the line and both formats, and no writer writes on
// after it, or after a head file of a newer format: the log is left as it
// was.
func TestNewerFormatIsRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	appendOrFail(t, path, "key.created", "key.revoked")
	chainedLines(t, path, map[string]any{"event": "key.created", "v": 2})
	os.Remove(path + ".head") // a writer of format 2 would record its own

	_, err := checkFile(t, path)
	var newer *NewerFormatError
	if !errors.As(err, &newer) || err.Error() != "line 3 is format 2; this caddy-apikey reads audit logs up to format 1: upgrade caddy-apikey" {
		t.Errorf("check: %v", err)
	}
	if _, err := CheckFiles(path); err == nil || !strings.HasPrefix(err.Error(), path+": line 3 is format 2;") {
		t.Errorf("check files: %v", err)
	}
	before, _ := os.ReadFile(path)
	err = Append(path, Entry{"event": "key.created"})
	if err == nil || !strings.Contains(err.Error(), "its last line is format 2; this caddy-apikey writes audit logs up to format 1: upgrade caddy-apikey (nothing was written)") {
		t.Errorf("append after a line of format 2: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("the log was changed:\n%s", after)
	}

	// A head file of a newer format, whatever the lines say.
	path2 := filepath.Join(dir, "audit2.log")
	appendOrFail(t, path2, "key.created")
	head, _ := os.ReadFile(path2 + ".head")
	os.WriteFile(path2+".head", bytes.Replace(head, []byte(`"version":1`), []byte(`"version":2`), 1), 0o600)
	before, _ = os.ReadFile(path2)
	want := path2 + ".head is format 2; this caddy-apikey reads audit logs up to format 1: upgrade caddy-apikey"
	if err := Append(path2, Entry{"event": "key.created"}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("append with a head of format 2: %v", err)
	}
	if after, _ := os.ReadFile(path2); !bytes.Equal(before, after) {
		t.Errorf("the log was changed:\n%s", after)
	}
	if _, _, err := ReadHead(path2); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("read head: %v", err)
	}
	if _, err := CheckFiles(path2); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("check files: %v", err)
	}

	for _, bad := range []string{`"2"`, `0`, `1.5`} {
		p := filepath.Join(dir, "bad.log")
		os.Remove(p)
		chainedLines(t, p, map[string]any{"event": "x", "v": json.RawMessage(bad)})
		if _, err := checkFile(t, p); err == nil || !strings.Contains(err.Error(), `line 1: "v" is `+bad+`, not a format version`) {
			t.Errorf("v %s: %v", bad, err)
		}
	}
}
