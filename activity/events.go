package activity

import (
	"sync"
	"sync/atomic"
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

var (
	listenersMu sync.Mutex
	listeners   []*listener
	listening   atomic.Int32
)

type listener struct{ fn func(KeyEvent) }

// Listening reports whether anything listens for key events (a portal);
// the gateway does not work out warnings nobody hears.
func Listening() bool { return listening.Load() > 0 }

// Listen calls fn with every key event published until stop is called. fn
// must not block (the gateway calls it on the request path): queue the
// event, bounded.
func Listen(fn func(KeyEvent)) (stop func()) {
	l := &listener{fn}
	listenersMu.Lock()
	listeners = append(listeners, l)
	listening.Add(1)
	listenersMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			listenersMu.Lock()
			defer listenersMu.Unlock()
			for i, x := range listeners {
				if x == l {
					listeners = append(listeners[:i:i], listeners[i+1:]...)
					listening.Add(-1)
					return
				}
			}
		})
	}
}

// Publish tells every listener of e.
func Publish(e KeyEvent) {
	if !Listening() {
		return
	}
	listenersMu.Lock()
	ls := listeners
	listenersMu.Unlock()
	for _, l := range ls {
		l.fn(e)
	}
}
