package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
)

func TestChainAndTamper(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	for i := 0; i < 3; i++ {
		if err := Append(path, Entry{"event": "key.created", "key_id": "k_" + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := Append(path, Entry{"event": "a"}, Entry{"event": "b"}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	n, head, err := Verify(bytes.NewReader(data))
	if err != nil || n != 5 || len(head) != 64 {
		t.Fatalf("verify: %d lines, head %q, %v", n, head, err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	lines = lines[:len(lines)-1]

	for name, c := range map[string]struct {
		content string
		want    string
	}{
		"edited":    {lines[0] + strings.Replace(lines[1], "k_b", "k_x", 1) + strings.Join(lines[2:], ""), "line 3: does not follow line 2"},
		"removed":   {lines[0] + strings.Join(lines[2:], ""), "line 2: does not follow line 1"},
		"first cut": {strings.Join(lines[1:], ""), "line 1: does not start the chain"},
		"swapped":   {lines[0] + lines[2] + lines[1] + strings.Join(lines[3:], ""), "line 2: does not follow line 1"},
		"truncated": {strings.Join(lines, "")[:len(data)-3], "line 5: incomplete"},
	} {
		if _, _, err := Verify(strings.NewReader(c.content)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestConcurrentWritersKeepTheChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	w := NewWriter(path, zap.NewNop)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				w.Log(Entry{"event": "request.denied"})
				if i%10 == 0 {
					Append(path, Entry{"event": "key.revoked"}) // another process, as the CLI is
				}
			}
		}()
	}
	wg.Wait()
	w.Close()
	data, _ := os.ReadFile(path)
	n, _, err := Verify(bytes.NewReader(data))
	if err != nil || n != 220 {
		t.Fatalf("%d lines, %v; want 220 and a whole chain", n, err)
	}
}
