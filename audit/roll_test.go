package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRollContinuesTheChain: appends past Roll.Size move the log aside and
// start a new one whose first line chains to the last of the old; Keep
// rolled files stay; CheckFiles follows the chain across them, and fails
// on a file edited, replaced by one that does not continue it, or removed
// between two others.
func TestRollContinuesTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	roll := Roll{Size: 300, Keep: 3}
	for i := range 40 {
		if err := AppendRolling(path, roll, Entry{"event": "e", "n": i}); err != nil {
			t.Fatal(err)
		}
	}
	rolled, err := rolledFiles(path)
	if err != nil || len(rolled) != 3 {
		t.Fatalf("rolled files %v %v, want 3", rolled, err)
	}
	if first := lineOf(t, path, 1); !strings.Contains(first, `"event":"audit.continued"`) || !strings.Contains(first, filepath.Base(rolled[2])) {
		t.Fatalf("first line of the log: %s", first)
	}
	res, err := CheckFiles(path)
	if err != nil || len(res.Files) != 4 || res.Gone == "" {
		t.Fatalf("CheckFiles: %+v %v", res, err)
	}
	// A head in a rolled file is found; one nowhere is not.
	h, _, _ := ReadHead(rolled[1])
	if _, err := CheckFiles(path, h); err != nil {
		t.Errorf("a head of a rolled file: %v", err)
	}
	if _, err := CheckFiles(path, Head{Lines: 2, SHA256: strings.Repeat("c", 64)}); err == nil {
		t.Error("a head from elsewhere passed")
	}

	original, _ := os.ReadFile(rolled[1])
	os.WriteFile(rolled[1], []byte(strings.Replace(string(original), `"n":`, `"n":1`, 1)), 0o600)
	if _, err := CheckFiles(path); err == nil || !strings.Contains(err.Error(), filepath.Base(rolled[1])) {
		t.Errorf("an edited rolled file: %v", err)
	}
	// Replaced by a log of its own (a new chain of the same entries).
	os.Remove(rolled[1])
	os.Remove(rolled[1] + ".head")
	if err := Append(rolled[1], Entry{"event": "e"}); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckFiles(path); err == nil || !strings.Contains(err.Error(), "not in its chain") {
		t.Errorf("a rolled file replaced: %v", err) // the files before it are cut off from the chain
	}
	os.Remove(rolled[1])
	os.Remove(rolled[1] + ".head")
	if _, err := CheckFiles(path); err == nil || !strings.Contains(err.Error(), "not in its chain") {
		t.Errorf("a rolled file removed: %v", err)
	}

	// A log that continues nothing is checked as before; a continued log
	// alone passes Check, which reports what it continues.
	res2, err := checkFile(t, path)
	if err != nil || res2.Continues == nil || res2.Continues.SHA256 == "" {
		t.Errorf("Check of a continued log alone: %+v %v", res2, err)
	}
}
