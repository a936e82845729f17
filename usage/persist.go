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

const fileVersion = 1

type savedFile struct {
	Version int          `json:"version"`
	Counts  []savedCount `json:"counts"`
}

type savedCount struct {
	Bucket
	Requests int64 `json:"requests"`
}

// ErrCorrupt marks a usage file that cannot be trusted.
var ErrCorrupt = errors.New("usage file is corrupt")

// Save writes every counter to path atomically.
func (c *Counts) Save(path string) error {
	f := savedFile{Version: fileVersion, Counts: []savedCount{}}
	c.Each(func(b Bucket, n int64) { f.Counts = append(f.Counts, savedCount{b, n}) })
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

// Load adds the counters saved in path. A missing file loads nothing; a
// file that does not parse or holds impossible values is not used at all.
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
	if f.Version != fileVersion || f.Counts == nil {
		return fmt.Errorf("%w: version %d or no counts", ErrCorrupt, f.Version)
	}
	sums := make(map[Bucket]int64, len(f.Counts))
	for _, sc := range f.Counts {
		if sc.KeyID == "" || sc.Requests <= 0 || sc.Hour%3600 != 0 || sc.Hour > now.Add(time.Hour).Unix() {
			return fmt.Errorf("%w: impossible values for key id %q", ErrCorrupt, sc.KeyID)
		}
		// A counter listed twice adds up; a sum past int64 is no count.
		if sums[sc.Bucket] > math.MaxInt64-sc.Requests {
			return fmt.Errorf("%w: the counts of key id %q add up past any possible number", ErrCorrupt, sc.KeyID)
		}
		sums[sc.Bucket] += sc.Requests
	}
	for _, sc := range f.Counts {
		c.Put(sc.Bucket, sc.Requests)
	}
	return nil
}
