package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/atomicfile"
	"github.com/moodmnky/caddy-apikey/internal/capped"
)

// The usage file's versions: 1 held requests only, each counter's more
// than zero; 2 adds each counter's prompt_tokens and completion_tokens
// (left out when zero), and a counter may hold tokens and no request; 3
// adds "redis", what Redis has not acknowledged yet (see Outbox). A file
// is written as version 2 when nothing waits for Redis (so that the
// version before reads it), as version 3 otherwise; Load reads all three.
const (
	fileVersion       = 3
	fileVersionTokens = 2
	fileVersionNoToks = 1
)

type savedFile struct {
	Version int          `json:"version"`
	Counts  []savedCount `json:"counts"`
	// Redis is what Redis has not acknowledged: nil when nothing waits.
	Redis *savedPending `json:"redis,omitempty"`
}

// savedPending is an Outbox: the batches sent (or about to be), each with
// its id, oldest first, and what was counted since, in no batch yet.
type savedPending struct {
	Batches []savedBatch `json:"batches,omitempty"`
	Unsent  []savedCount `json:"unsent,omitempty"`
}

type savedBatch struct {
	ID     string       `json:"id"`
	Counts []savedCount `json:"counts"`
}

// savedCount is one counter: the fields of its Bucket and of its Tally.
type savedCount struct {
	Bucket
	Tally
}

// ErrCorrupt marks a usage file that cannot be trusted.
var ErrCorrupt = errors.New("usage file is corrupt")

// Save writes every counter to path atomically, with nothing pending for
// Redis.
func (c *Counts) Save(path string) error {
	f := savedFile{Counts: []savedCount{}}
	c.Each(func(b Bucket, t Tally) { f.Counts = append(f.Counts, savedCount{b, t}) })
	return writeFile(path, &f)
}

// writeFile writes f, of the version its content needs.
func writeFile(path string, f *savedFile) error {
	f.Version = fileVersionTokens
	if f.Redis != nil {
		f.Version = fileVersion
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600)
}

// Load adds the counters saved in path, by this version or the ones before;
// what the file holds as pending for Redis is not read (Outbox.Load reads
// it). A missing file loads nothing; a file that does not parse or holds
// impossible values is not used at all.
func (c *Counts) Load(path string, now time.Time) error {
	f, err := readFile(path, now)
	if err != nil || f == nil {
		return err
	}
	for _, sc := range f.Counts {
		c.Put(sc.Bucket, sc.Tally)
	}
	return nil
}

// readFile reads and checks a usage file: nil, nil when there is none.
func readFile(path string, now time.Time) (*savedFile, error) {
	data, err := capped.ReadFile("usage file", path, capped.State)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var seen struct {
		Version int `json:"version"`
	}
	if json.Unmarshal(data, &seen) == nil && seen.Version > fileVersion {
		return nil, fmt.Errorf("%w: written by a newer caddy-apikey (file format %d; this version reads formats 1 to %d); it is not read", ErrCorrupt, seen.Version, fileVersion)
	}
	var f savedFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: more after the counts", ErrCorrupt)
	}
	switch {
	case f.Version < fileVersionNoToks || f.Version > fileVersion || f.Counts == nil:
		return nil, fmt.Errorf("%w: version %d or no counts", ErrCorrupt, f.Version)
	case f.Redis != nil && f.Version < fileVersion:
		return nil, fmt.Errorf("%w: version %d holds counts pending for redis", ErrCorrupt, f.Version)
	}
	if err := checkCounts(f.Counts, f.Version, now); err != nil {
		return nil, err
	}
	if f.Redis != nil {
		if err := checkCounts(f.Redis.Unsent, f.Version, now); err != nil {
			return nil, err
		}
		for _, b := range f.Redis.Batches {
			if _, ok := parseBatchID(b.ID); !ok {
				return nil, fmt.Errorf("%w: a batch id that is not one", ErrCorrupt)
			}
			if err := checkCounts(b.Counts, f.Version, now); err != nil {
				return nil, err
			}
		}
	}
	return &f, nil
}

// checkCounts refuses impossible values: no key id, negative counts or
// none at all, an hour that is no hour's start or after the next hour, and
// sums past int64.
func checkCounts(counts []savedCount, version int, now time.Time) error {
	sums := make(map[Bucket]Tally, len(counts))
	for _, sc := range counts {
		t := sc.Tally
		possible := t.Requests >= 0 && t.PromptTokens >= 0 && t.CompletionTokens >= 0 && t != (Tally{})
		if version == fileVersionNoToks {
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
	return nil
}
