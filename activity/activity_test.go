package activity

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestLogKeepsTheLastRequests: the log is a ring of LogSize, newest first,
// with paths cut to MaxPath.
func TestLogKeepsTheLastRequests(t *testing.T) {
	tr := New()
	start := time.Unix(1_700_000_000, 0)
	for i := range LogSize + 30 {
		tr.Record(Request{KeyID: "k1", At: start.Add(time.Duration(i) * time.Second), Method: "GET", Path: fmt.Sprintf("/p/%d", i), Status: 200})
	}
	tr.Record(Request{KeyID: "k1", At: start.Add(time.Hour), Method: "BREW", Path: "/" + strings.Repeat("a", 500), Status: 403, Reason: "method"})
	s, ok := tr.Of("k1")
	if !ok || len(s.Log) != LogSize {
		t.Fatalf("log of %d lines, want %d", len(s.Log), LogSize)
	}
	if l := s.Log[0]; l.Method != "OTHER" || l.Status != 403 || l.Reason != "method" || len(l.Path) > MaxPath || !strings.HasSuffix(l.Path, "…") {
		t.Errorf("newest line: %+v", l)
	}
	if l := s.Log[1]; l.Path != fmt.Sprintf("/p/%d", LogSize+29) {
		t.Errorf("second line: %+v", l)
	}
	if l := s.Log[LogSize-1]; l.Path != "/p/31" {
		t.Errorf("oldest line kept: %+v, want /p/31", l)
	}
	if fmt.Sprint(s.Refusals) != "[{method 403 1}]" {
		t.Errorf("refusals: %v", s.Refusals)
	}
}

// TestModelsAreBounded: past MaxModels, models count as OtherModel.
func TestModelsAreBounded(t *testing.T) {
	tr := New()
	for i := range MaxModels + 5 {
		tr.Record(Request{KeyID: "k1", At: time.Now(), Method: "POST", Path: "/v1/chat/completions", Status: 200, Model: fmt.Sprintf("m%02d", i), Tokens: 10})
	}
	s, _ := tr.Of("k1")
	if len(s.Models) != MaxModels+1 {
		t.Fatalf("%d models, want %d", len(s.Models), MaxModels+1)
	}
	var other Model
	for _, m := range s.Models {
		if m.Name == OtherModel {
			other = m
		}
	}
	if other.Requests != 5 || other.Tokens != 50 {
		t.Errorf("%s: %+v, want 5 requests and 50 tokens", OtherModel, other)
	}
}

// TestKeysAreBounded: past MaxKeys, the key seen least recently in the
// shard is forgotten.
func TestKeysAreBounded(t *testing.T) {
	tr := New()
	at := time.Unix(1_700_000_000, 0)
	for i := range MaxKeys + 100 {
		tr.Record(Request{KeyID: fmt.Sprintf("k%d", i), At: at.Add(time.Duration(i)), Method: "GET", Path: "/", Status: 200})
	}
	if n := tr.Len(); n > MaxKeys {
		t.Errorf("%d keys tracked, want at most %d", n, MaxKeys)
	}
	if tr.Evicted.Load()+tr.Untracked.Load() != 100 {
		t.Errorf("evicted %d, untracked %d, want 100 in all", tr.Evicted.Load(), tr.Untracked.Load())
	}
	if _, ok := tr.Of(fmt.Sprintf("k%d", MaxKeys+99)); !ok {
		t.Error("the newest key is not tracked")
	}
}

// BenchmarkRecord: recording a request of a known key allocates nothing.
func BenchmarkRecord(b *testing.B) {
	tr := New()
	q := Request{KeyID: "k1", At: time.Now(), Method: "POST", Path: "/v1/chat/completions", Status: 200, Model: "llama3", Tokens: 12}
	b.ReportAllocs()
	for b.Loop() {
		tr.Record(q)
	}
}
