package app

import (
	"sync"
	"time"
)

// marksKey is the Marks' place in the shared pool.
const marksKey = "apikey.marks"

// maxMarks is how many keys' quota marks are kept before the marks of
// ended windows are dropped.
const maxMarks = 100000

// Marks remember, per key, the events sent that are sent once per window
// (the highest quota warning sent in the key's current window) or at most
// once per period (a deprecated key's use). One Marks is shared by every
// route, across reloads; only touched when a key has used 80% of its
// quota or is deprecated.
type Marks struct {
	mu         sync.Mutex
	sent       map[string]sentMark
	deprecated map[string]time.Time // guarded by mu
}

type sentMark struct {
	windowEnd int64
	percent   int64
}

// HoldMarks returns the process's Marks and the function that lets go of
// them.
func HoldMarks() (*Marks, func() error, error) {
	return Shared(marksKey, func() (*Marks, error) {
		return &Marks{sent: map[string]sentMark{}, deprecated: map[string]time.Time{}}, nil
	})
}

// Destruct lets the marks go with the last config that used them.
func (*Marks) Destruct() error { return nil }

// Sent records that the event of level (80, 90; 100 for the quota
// running out) was sent for the key's window ending at reset; false when
// it was already, at this level or above.
func (m *Marks) Sent(keyID string, reset time.Time, level int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.sent[keyID]
	if prev.windowEnd == reset.Unix() && prev.percent >= level {
		return false
	}
	m.sent[keyID] = sentMark{windowEnd: reset.Unix(), percent: level}
	if len(m.sent) > maxMarks {
		now := time.Now().Unix()
		for id, w := range m.sent {
			if w.windowEnd < now {
				delete(m.sent, id)
			}
		}
	}
	return true
}

// Forget re-arms a key's quota warnings, after its quota was reset.
func (m *Marks) Forget(keyID string) {
	m.mu.Lock()
	delete(m.sent, keyID)
	m.mu.Unlock()
}

// Due reports whether an event sent at most once per every for the key
// is due now, and if so records it as sent.
func (m *Marks) Due(keyID string, now time.Time, every time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if last, ok := m.deprecated[keyID]; ok && now.Sub(last) < every {
		return false
	}
	m.deprecated[keyID] = now
	return true
}
