package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
)

// The usage file's versions: 1 held requests only, each counter's more
// than zero; 2 adds each counter's prompt_tokens and completion_tokens
// (left out when zero), and a counter may hold tokens and no request.
// Save writes fileVersion; Load reads both.
const (
	fileVersion       = 2
	fileVersionNoToks = 1
)

type savedFile struct {
	Version int          `json:"version"`
	Counts  []savedCount `json:"counts"`
}

// savedCount is one counter: the fields of its Bucket and of its Tally.
type savedCount struct {
	Bucket
	Tally
}

// ErrCorrupt marks a usage file that cannot be trusted.
var ErrCorrupt = errors.New("usage file is corrupt")

// Save writes every counter to path atomically.
func (c *Counts) Save(path string) error {
	f := savedFile{Version: fileVersion, Counts: []savedCount{}}
	c.Each(func(b Bucket, t Tally) { f.Counts = append(f.Counts, savedCount{b, t}) })
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

// Load adds the counters saved in path, by this version or the one before
// (requests only). A missing file loads nothing; a file that does not parse
// or holds impossible values is not used at all.
func (c *Counts) Load(path string, now time.Time) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var f savedFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if (f.Version != fileVersion && f.Version != fileVersionNoToks) || f.Counts == nil {
		return fmt.Errorf("%w: version %d or no counts", ErrCorrupt, f.Version)
	}
	sums := make(map[Bucket]Tally, len(f.Counts))
	for _, sc := range f.Counts {
		t := sc.Tally
		possible := t.Requests >= 0 && t.PromptTokens >= 0 && t.CompletionTokens >= 0 && t != (Tally{})
		if f.Version == fileVersionNoToks {
			possible = t.Requests > 0 && t.PromptTokens == 0 && t.CompletionTokens == 0
		}
		if sc.KeyID == "" || !possible || sc.Hour%3600 != 0 || sc.Hour > now.Add(time.Hour).Unix() {
			return fmt.Errorf("%w: impossible values for key id %q", ErrCorrupt, sc.KeyID)
		}
		// A counter listed twice adds up; a sum past int64 is no count.
		sum := sums[sc.Bucket]
		if sum.Requests > math.MaxInt64-t.Requests || sum.PromptTokens > math.MaxInt64-t.PromptTokens ||
			sum.CompletionTokens > math.MaxInt64-t.CompletionTokens {
			return fmt.Errorf("%w: the counts of key id %q add up past any possible number", ErrCorrupt, sc.KeyID)
		}
		sum.Add(t)
		sums[sc.Bucket] = sum
	}
	for _, sc := range f.Counts {
		c.Put(sc.Bucket, sc.Tally)
	}
	return nil
}
