package ratelimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
)

// counterFileVersion is written into every counter file; a file of another
// version is not trusted.
const counterFileVersion = 1

type counterFile struct {
	Version  int                     `json:"version"`
	SavedAt  time.Time               `json:"saved_at"`
	Counters map[string]savedCounter `json:"counters"`
}

type savedCounter struct {
	WindowStart int64 `json:"window_start"`
	WindowEnd   int64 `json:"window_end"`
	Count       int64 `json:"count"`
	TAT         int64 `json:"tat,omitempty"`
	LastSeen    int64 `json:"last_seen"`
}

// maxWindow is the longest a daily window can be (25 hours), with an hour to spare.
const maxWindow = 26 * time.Hour

// ErrCorrupt marks a counter file that cannot be trusted.
var ErrCorrupt = errors.New("counter file is corrupt")

// Save writes every counter to path atomically: a crash leaves either the
// old file or the new one, never half of one.
func (m *Memory) Save(path string) error {
	f := counterFile{Version: counterFileVersion, SavedAt: m.now().UTC(), Counters: map[string]savedCounter{}}
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for key, c := range sh.counters {
			f.Counters[key] = savedCounter{WindowStart: c.windowStart, WindowEnd: c.windowEnd, Count: c.count, TAT: c.tat, LastSeen: c.lastSeen}
		}
		sh.mu.Unlock()
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

// Load adds the counters saved in path. A missing file loads nothing. A file
// that does not parse or holds impossible values is not used at all, and
// the error wraps ErrCorrupt.
func (m *Memory) Load(path string) (int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var f counterFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if dec.More() {
		return 0, fmt.Errorf("%w: data after the counters", ErrCorrupt)
	}
	if f.Version != counterFileVersion {
		return 0, fmt.Errorf("%w: version %d, want %d", ErrCorrupt, f.Version, counterFileVersion)
	}
	if f.Counters == nil {
		return 0, fmt.Errorf("%w: no counters object", ErrCorrupt)
	}
	// Nothing may lie further ahead than a day (a window, with room for a
	// clock that moved back) or a burst period can reach.
	now := m.now()
	latest := now.Add(maxWindow).Unix()
	for key, c := range f.Counters {
		if key == "" || c.Count < 0 || c.WindowStart <= 0 || c.LastSeen <= 0 || c.TAT < 0 ||
			c.WindowEnd <= c.WindowStart || c.WindowEnd-c.WindowStart > int64(maxWindow/time.Second) ||
			c.WindowStart > latest || c.LastSeen > latest || c.TAT > now.Add(maxWindow).UnixNano() {
			return 0, fmt.Errorf("%w: impossible values for key id %q", ErrCorrupt, key)
		}
	}
	for key, c := range f.Counters {
		sh := m.shard(key)
		sh.mu.Lock()
		sh.counters[key] = &counter{
			state:    state{windowStart: c.WindowStart, windowEnd: c.WindowEnd, count: c.Count, tat: c.TAT},
			lastSeen: c.LastSeen,
		}
		sh.mu.Unlock()
	}
	return len(f.Counters), nil
}
