package portal

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// A key's owner is told when it expires within 14 days (key.expiring).
// The gateway tells them when a request uses such a key; the sweep tells
// them of the keys nobody uses: at start and every hour, the portal looks
// through its store, a page of 1,000 records at a time with a pause
// between pages, and hands each key expiring within 14 days to the
// activity tracker (activity.Tracker.NoticeExpiry), which publishes it
// once per key and expiry, whoever noticed it first.

// expirySweepEvery is how often the store is looked through.
const expirySweepEvery = time.Hour

// expirySweepPause is the pause between two pages of a sweep: 100,000
// keys are 100 pages, looked through in about 10 s plus the reading. The
// benchmark takes it out, to measure the reading.
var expirySweepPause = 100 * time.Millisecond

// expirySweep is the running sweep.
type expirySweep struct {
	stop chan struct{}
	done chan struct{}
}

// startExpirySweep starts sweeping, when the gateway's key events reach
// the portal.
func (s *Server) startExpirySweep() {
	if s.keyEvents == nil {
		return
	}
	sw := &expirySweep{stop: make(chan struct{}), done: make(chan struct{})}
	s.sweep = sw
	every := expirySweepEvery
	go func() {
		defer close(sw.done)
		timer := time.NewTimer(0)
		defer timer.Stop()
		for {
			select {
			case <-sw.stop:
				return
			case <-timer.C:
			}
			s.sweepExpiries(sw.stop)
			timer.Reset(every)
		}
	}()
}

// stopExpirySweep stops the sweep and waits for it.
func (s *Server) stopExpirySweep() {
	if sw := s.sweep; sw != nil {
		close(sw.stop)
		<-sw.done
		s.sweep = nil
	}
}

// sweepExpiries looks through the store once, until stop; it returns how
// many records it looked at.
func (s *Server) sweepExpiries(stop <-chan struct{}) (looked int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	after := ""
	for {
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		page, err := s.backend.Store.List(pctx, keystore.ListQuery{After: after, Limit: keystore.MaxListLimit})
		pcancel()
		if err != nil {
			if ctx.Err() == nil {
				s.backend.Logger.Warn("the portal could not look through its store for keys about to expire; it tries again in an hour",
					zap.Error(err))
			}
			return looked
		}
		now := s.now()
		for i := range page.Records {
			r := &page.Records[i]
			looked++
			if r.Revoked || r.Owner == "" || r.ExpiresAt == "" {
				continue
			}
			expires, err := time.Parse(time.RFC3339, r.ExpiresAt)
			if err != nil || !expires.After(now) || expires.Sub(now) > activity.ExpiryNotice {
				continue
			}
			// The owners are looked up by the key events' queue: wait for
			// room in it rather than have the notice dropped.
			for len(s.keyEvents.queue) > maxKeyEvents/2 {
				select {
				case <-stop:
					return looked
				case <-time.After(10 * time.Millisecond):
				}
			}
			s.backend.Activity.NoticeExpiry(r.ID, expires, now)
		}
		if page.Next == "" {
			return looked
		}
		after = page.Next
		select {
		case <-stop:
			return looked
		case <-time.After(expirySweepPause):
		}
	}
}
