package activity

import (
	"sync"
	"time"
)

// KeyEvent is something the gateway tells a key's owner of, through the
// portal's notifications: a quota or token budget reaching 80, 90 or 100 %
// of its window, or the key reported leaked.
type KeyEvent struct {
	KeyID string
	// Event is "key.quota" (the daily request quota), "key.tokens" (the
	// daily token budget) or "key.leaked".
	Event   string
	Percent int64
	Used    int64
	Limit   int64
	Reset   time.Time
	// Detail is what a leak report said: where the key was found.
	Detail string
	At     time.Time
}

type listener struct{ fn func(KeyEvent) }

// Listening reports whether anything listens for the tracker's key events
// (a portal of the same store); the gateway does not work out warnings
// nobody hears. A nil tracker has no listeners.
func (t *Tracker) Listening() bool {
	if t == nil {
		return false
	}
	ls := t.listeners.Load()
	return ls != nil && len(*ls) > 0
}

// Listen calls fn with every key event published until stop is called. fn
// must not block (the gateway calls it on the request path): queue the
// event, bounded.
func (t *Tracker) Listen(fn func(KeyEvent)) (stop func()) {
	l := &listener{fn}
	t.listenersMu.Lock()
	t.listeners.Store(withListener(t.listeners.Load(), l, true))
	t.listenersMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.listenersMu.Lock()
			defer t.listenersMu.Unlock()
			t.listeners.Store(withListener(t.listeners.Load(), l, false))
		})
	}
}

// withListener is a new list: old with l added or taken out. Lists are
// never changed in place, so Publish reads one without a lock.
func withListener(old *[]*listener, l *listener, add bool) *[]*listener {
	var ls []*listener
	if old != nil {
		for _, x := range *old {
			if x != l {
				ls = append(ls, x)
			}
		}
	}
	if add {
		ls = append(ls, l)
	}
	return &ls
}

// Publish tells every listener of e. A nil tracker tells nobody.
func (t *Tracker) Publish(e KeyEvent) {
	if t == nil {
		return
	}
	if ls := t.listeners.Load(); ls != nil {
		for _, l := range *ls {
			l.fn(e)
		}
	}
}
