package portal

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyfile"
)

// BenchmarkExpirySweep is one look through a key file of 100,000 keys
// (every 10th expiring within 14 days), without the pauses between pages:
// the first finds 10,000 keys to tell of; the later ones, as every hour
// after, find them told already.
func BenchmarkExpirySweep(b *testing.B) {
	const n = 100_000
	now := time.Now().UTC()
	recs := make([]keystore.Record, n)
	for i := range recs {
		key, err := keystore.Generate(keystore.Dev)
		if err != nil {
			b.Fatal(err)
		}
		expires := now.Add(60 * 24 * time.Hour)
		if i%10 == 0 {
			expires = now.Add(time.Duration(1+i%13) * 24 * time.Hour)
		}
		recs[i] = keystore.Record{ID: fmt.Sprintf("k_%07d", i), Hash: keystore.Sum(key).Encode(), Type: "dev", Role: "reader",
			Services: []string{"echo"}, Owner: fmt.Sprintf("dev%d", i%500), ExpiresAt: expires.Format(time.RFC3339)}
	}
	data, _ := json.Marshal(map[string]any{"keys": recs})
	path := filepath.Join(b.TempDir(), "keys.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	p := Policy{Services: []Service{{Name: "echo", Path: "/echo/hello"}}}
	if err := p.check(); err != nil {
		b.Fatal(err)
	}
	// Made without a tracker, so that no sweep starts on its own; then
	// given one.
	s, err := New("/portal", p, Backend{Store: keyfile.NewStore(path)})
	if err != nil {
		b.Fatal(err)
	}
	s.backend.Activity = activity.New()
	s.listenForKeyEvents()
	defer s.Close()
	pause := expirySweepPause
	expirySweepPause = 0
	defer func() { expirySweepPause = pause }()
	stop := make(chan struct{})
	if looked := s.sweepExpiries(stop); looked != n {
		b.Fatalf("the first sweep looked at %d records, want %d", looked, n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		s.sweepExpiries(stop)
	}
}
