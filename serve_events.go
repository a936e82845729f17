package apikey

import (
	"context"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// Event names, for `events { on <name> ... }`.
const (
	eventDenied        = "apikey_denied"
	eventQuotaExceeded = "apikey_quota_exceeded"
	eventQuotaWarning  = "apikey_quota_warning"
	eventDeprecatedKey = "apikey_deprecated_key_used"
	eventTokenWarning  = "apikey_token_warning"
)

// deprecatedEventEvery limits apikey_deprecated_key_used to once per key per
// hour: an old secret in use is worth a nudge, not an event per request.
const deprecatedEventEvery = time.Hour

// emitter sends the handler's events when the config has an events app.
type emitter struct {
	app *caddyevents.App
	ctx caddy.Context
}

func newEmitter(ctx caddy.Context) emitter {
	app, err := ctx.AppIfConfigured("events")
	if err != nil {
		return emitter{}
	}
	events, _ := app.(*caddyevents.App)
	return emitter{app: events, ctx: ctx}
}

func (e emitter) on() bool { return e.app != nil }

func (e emitter) emit(name string, data map[string]any) {
	if e.app != nil {
		e.app.Emit(e.ctx, name, data)
	}
}

// warningDue returns the warning level (80 or 90) that a key has just
// reached in its window and that was not sent yet, or 0.
func (h *Handler) warningDue(keyID string, used, limit int64, reset time.Time) int64 {
	if limit <= 0 {
		return 0
	}
	level := int64(0)
	switch {
	case used*10 >= limit*9:
		level = 90
	case used*10 >= limit*8:
		level = 80
	default:
		return 0
	}
	if !h.markSent(keyID, reset, level) {
		return 0
	}
	return level
}

// markSent records that the event of level (80, 90; 100 for the quota
// running out) was sent for the key's window ending at reset; false when it
// was already, at this level or above. The marks are the process's (see
// app.Marks), shared by every route.
func (h *Handler) markSent(keyID string, reset time.Time, level int64) bool {
	return h.marks.Sent(keyID, reset, level)
}

// announceTimeout bounds the call that asks a shared counter store whether
// another instance sent an event first.
const announceTimeout = time.Second

// emitOnce sends a once-per-window event (a quota warning, the quota
// running out). With a counter store shared by several instances, it asks
// the store first, off the request path, so that one instance in the
// cluster sends it; if the store cannot answer, it sends it anyway (a
// duplicate rather than a lost warning).
func (h *Handler) emitOnce(event, keyID, mark string, until time.Time, data map[string]any) {
	ann, ok := h.counters.(ratelimit.Announcer)
	if !ok {
		h.events.emit(event, data)
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), announceTimeout)
		defer cancel()
		if first, err := ann.FirstToAnnounce(ctx, keyID, mark, until); first || err != nil {
			h.events.emit(event, data)
		}
	}()
}

// deprecatedDue reports whether apikey_deprecated_key_used should be sent
// for the key now.
func (h *Handler) deprecatedDue(keyID string, now time.Time) bool {
	return h.marks.Due(keyID, now, deprecatedEventEvery)
}
