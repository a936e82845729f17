package ratelimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/internal/capped"
)

// counterFileVersion is written into every counter file; a file of another
// version is not trusted. Token budgets came within version 1, as an
// optional "tokens" object: a file written before them loads as it did, so
// no bump was needed. (A binary from before them refuses a file that holds
// some, as an unknown field: a downgrade sets the file aside.)
const counterFileVersion = 1

type counterFile struct {
	Version  int                     `json:"version"`
	SavedAt  time.Time               `json:"saved_at"`
	Counters map[string]savedCounter `json:"counters"`
	Tokens   map[string]savedTokens  `json:"tokens,omitempty"`
}

type savedCounter struct {
	WindowStart int64 `json:"window_start"`
	WindowEnd   int64 `json:"window_end"`
	Count       int64 `json:"count"`
	TAT         int64 `json:"tat,omitempty"`
	LastSeen    int64 `json:"last_seen"`
}

// savedTokens is one key's token budgets (tokenState).
type savedTokens struct {
	DayStart    int64            `json:"day_start"`
	DayEnd      int64            `json:"day_end"`
	DayUsed     int64            `json:"day_used"`
	MinuteStart int64            `json:"minute_start"`
	MinuteUsed  int64            `json:"minute_used,omitempty"`
	Models      map[string]int64 `json:"models,omitempty"`
	LastSeen    int64            `json:"last_seen"`
}

// possible reports whether a saved token state could have been written by
// a Memory whose clock read at most latest (Unix seconds): a daily window
// of at most maxWindow, a minute on a minute boundary, no negative count,
// no more models than a key may count.
func (t savedTokens) possible(latest int64) bool {
	if t.DayUsed < 0 || t.MinuteUsed < 0 || t.DayStart <= 0 || t.LastSeen <= 0 ||
		t.DayEnd <= t.DayStart || t.DayEnd-t.DayStart > int64(maxWindow/time.Second) ||
		t.DayStart > latest || t.LastSeen > latest ||
		t.MinuteStart <= 0 || t.MinuteStart%60 != 0 || t.MinuteStart > latest ||
		len(t.Models) > maxTokenModels {
		return false
	}
	for _, used := range t.Models {
		if used < 0 {
			return false
		}
	}
	return true
}

// maxWindow is the longest a daily window can be (25 hours), with an hour to spare.
const maxWindow = 26 * time.Hour

// ErrCorrupt marks a counter file that cannot be trusted.
var ErrCorrupt = errors.New("counter file is corrupt")

// Save writes every counter and token budget to path atomically: a crash leaves either the
// old file or the new one, never half of one.
func (m *Memory) Save(path string) error {
	f := counterFile{Version: counterFileVersion, SavedAt: m.now().UTC(), Counters: map[string]savedCounter{}}
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for key, c := range sh.counters {
			f.Counters[key] = savedCounter{WindowStart: c.windowStart, WindowEnd: c.windowEnd, Count: c.count, TAT: c.tat, LastSeen: c.lastSeen}
		}
		for key, t := range sh.tokens {
			if t.dayEnd == 0 {
				continue // refused before any window began: nothing to keep
			}
			if f.Tokens == nil {
				f.Tokens = map[string]savedTokens{}
			}
			var models map[string]int64
			if len(t.models) > 0 {
				models = make(map[string]int64, len(t.models))
				for model, used := range t.models {
					models[model] = used
				}
			}
			f.Tokens[key] = savedTokens{DayStart: t.dayStart, DayEnd: t.dayEnd, DayUsed: t.dayUsed,
				MinuteStart: t.minute, MinuteUsed: t.minuteUsed, Models: models, LastSeen: t.lastSeen}
		}
		sh.mu.Unlock()
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

// Load adds the counters and token budgets saved in path, and returns how
// many keys it loaded. A missing file loads nothing. A file
// that does not parse or holds impossible values is not used at all, and
// the error wraps ErrCorrupt.
func (m *Memory) Load(path string) (int, error) {
	data, err := capped.ReadFile("counter file", path, capped.State)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if v := fileVersionOf(data); v > counterFileVersion {
		return 0, fmt.Errorf("%w: written by a newer caddy-apikey (file format %d; this version reads format %d); it is not read", ErrCorrupt, v, counterFileVersion)
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
	keys := len(f.Counters)
	for key, t := range f.Tokens {
		if key == "" || !t.possible(latest) {
			return 0, fmt.Errorf("%w: impossible token values for key id %q", ErrCorrupt, key)
		}
		if _, ok := f.Counters[key]; !ok {
			keys++
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
	for key, t := range f.Tokens {
		sh := m.shard(key)
		sh.mu.Lock()
		sh.tokens[key] = &tokenState{dayStart: t.DayStart, dayEnd: t.DayEnd, dayUsed: t.DayUsed,
			minute: t.MinuteStart, minuteUsed: t.MinuteUsed, models: t.Models, lastSeen: t.LastSeen}
		sh.mu.Unlock()
	}
	return keys, nil
}

// fileVersionOf is the "version" of a state file, read leniently (a newer
// format may have fields this version does not know); 0 when it has none.
func fileVersionOf(data []byte) int {
	var v struct {
		Version int `json:"version"`
	}
	_ = json.Unmarshal(data, &v)
	return v.Version
}
