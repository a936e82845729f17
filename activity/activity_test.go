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

// TestExpiryIsNoticedOnce: a key's owner is told of its coming expiry once
// per expiry, whether a request of the key or a sweep (NoticeExpiry) sees
// it first; a new expiry is told again; nothing is told with nobody
// listening, or of a key expiring later than ExpiryNotice.
func TestExpiryIsNoticedOnce(t *testing.T) {
	tr := New()
	now := time.Unix(1_700_000_000, 0)
	soon := now.Add(3 * 24 * time.Hour)
	if tr.NoticeExpiry("k1", soon, now) {
		t.Error("noticed with nobody listening")
	}
	var got []KeyEvent
	stop := tr.Listen(func(e KeyEvent) { got = append(got, e) })
	defer stop()
	if !tr.NoticeExpiry("k1", soon, now) || tr.NoticeExpiry("k1", soon, now.Add(time.Hour)) {
		t.Error("the sweep did not notice k1 once")
	}
	tr.Record(Request{KeyID: "k1", At: now.Add(2 * time.Hour), Method: "GET", Path: "/", Status: 200, Expires: soon})
	tr.Record(Request{KeyID: "k2", At: now, Method: "GET", Path: "/", Status: 200, Expires: soon})
	if tr.NoticeExpiry("k2", soon, now.Add(time.Hour)) {
		t.Error("the sweep noticed k2 again after its request did")
	}
	if tr.NoticeExpiry("k3", now.Add(ExpiryNotice+time.Minute), now) || tr.NoticeExpiry("k3", now.Add(-time.Minute), now) {
		t.Error("noticed a key expiring later than ExpiryNotice, or expired")
	}
	later := soon.Add(30 * 24 * time.Hour)
	if !tr.NoticeExpiry("k1", later, later.Add(-24*time.Hour)) {
		t.Error("k1's new expiry was not noticed")
	}
	if len(got) != 3 || got[0].KeyID != "k1" || got[1].KeyID != "k2" || got[2].KeyID != "k1" || !got[2].Reset.Equal(later) {
		t.Errorf("published %+v, want k1, k2, k1 (its new expiry)", got)
	}
	for _, e := range got {
		if e.Event != "key.expiring" {
			t.Errorf("published %q", e.Event)
		}
	}
}

// TestExpiryNoticesAreBounded: MaxExpiryNotices notices of expiries to
// come are remembered; past it none is published (counted), and once
// those expiries pass, their room is used again.
func TestExpiryNoticesAreBounded(t *testing.T) {
	tr := New()
	defer tr.Listen(func(KeyEvent) {})()
	now := time.Unix(1_700_000_000, 0)
	soon := now.Add(24 * time.Hour)
	told := 0
	for i := range MaxExpiryNotices + 5_000 {
		if tr.NoticeExpiry(fmt.Sprintf("k%06d", i), soon, now) {
			told++
		}
	}
	if told > MaxExpiryNotices || told < MaxExpiryNotices-shards*200 {
		t.Errorf("%d notices remembered, want at most %d (and not far below)", told, MaxExpiryNotices)
	}
	if n := tr.Unnoticed.Load(); n != uint64(MaxExpiryNotices+5_000-told) {
		t.Errorf("Unnoticed = %d, want %d", n, MaxExpiryNotices+5_000-told)
	}
	after := soon.Add(time.Hour)
	for i := range 1_000 {
		if !tr.NoticeExpiry(fmt.Sprintf("n%06d", i), after.Add(24*time.Hour), after) {
			t.Fatalf("key n%06d not noticed once the remembered expiries had passed", i)
		}
	}
}
