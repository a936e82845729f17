package portal

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/moodmnky/caddy-apikey/activity"
)

// The gateway's routes of the portal's store publish key events (its
// activity.Tracker's Publish): a quota or
// token budget at 80, 90 or 100 %, a key used within 14 days of its
// expiry, a key reported leaked. The portal tells each key's owner, as it
// tells them of an administrator's action.

// maxKeyEvents bounds the events waiting for their key's owner to be
// looked up; past it, new ones are dropped (counted).
const maxKeyEvents = 1000

// keyEvents is the portal's side of the gateway's key events.
type keyEvents struct {
	queue   chan activity.KeyEvent
	done    chan struct{}
	stop    func()
	dropped atomic.Uint64
}

// listenForKeyEvents starts telling owners of their keys' events.
func (s *Server) listenForKeyEvents() {
	if s.backend.Activity == nil {
		return
	}
	ke := &keyEvents{queue: make(chan activity.KeyEvent, maxKeyEvents), done: make(chan struct{})}
	s.keyEvents = ke
	ke.stop = s.backend.Activity.Listen(func(e activity.KeyEvent) {
		select {
		case ke.queue <- e:
		default:
			ke.dropped.Add(1)
		}
	})
	go func() {
		for {
			select {
			case <-ke.done:
				return
			case e := <-ke.queue:
				s.tellOwner(e)
			}
		}
	}()
}

// stopKeyEvents stops listening.
func (s *Server) stopKeyEvents() {
	if ke := s.keyEvents; ke != nil {
		ke.stop()
		close(ke.done)
		s.keyEvents = nil
	}
}

// tellOwner notifies the owner of the event's key, if the portal's store
// holds it.
func (s *Server) tellOwner(e activity.KeyEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, err := s.backend.Store.Get(ctx, e.KeyID)
	if err != nil || (rec.Owner == "" && rec.Team == "") {
		return // a key of another store, or of no developer
	}
	n := Notice{Event: e.Event, KeyID: e.KeyID, Percent: e.Percent, Time: e.At.UTC()}
	reset := e.Reset.UTC().Format("2006-01-02 15:04 UTC")
	what := map[string]string{"key.quota": "daily quota", "key.tokens": "daily token budget"}[e.Event]
	switch {
	case what != "" && e.Percent >= 100:
		n.Text = fmt.Sprintf("Your key %s has used all of its %s (%d); the gateway refuses it until %s.", e.KeyID, what, e.Limit, reset)
	case what != "":
		n.Text = fmt.Sprintf("Your key %s has used %d%% of its %s (%d of %d); it resets at %s.", e.KeyID, e.Percent, what, e.Used, e.Limit, reset)
	case e.Event == "key.expiring":
		n.Text = fmt.Sprintf("Your key %s expires at %s, within 14 days: rotate it (which renews it) or create another.", e.KeyID, reset)
	case e.Event == "key.leaked":
		n.Text = fmt.Sprintf("Your key %s was reported leaked: %s. Rotate it now.", e.KeyID, e.Detail)
	default:
		return
	}
	if rec.Team != "" {
		// The team's key: its members are told, not its maker, who may
		// have left the team.
		s.tellTeam(rec.Team, n)
		return
	}
	s.notes.notify(rec.Owner, n)
}
