package apikey

import (
	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// appRoute is what the handler shares, through its config's apikey app,
// with the admin API and the portal.
func (h *Handler) appRoute() *app.Route {
	r := &app.Route{Source: h.source, Counters: h.counters, Policy: h.limits.policy, Usage: h.usage,
		Audit: h.audit, Marks: h.marks}
	for _, t := range []keystore.Type{keystore.Dev, keystore.Prod} {
		if h.allowTypes&(1<<t) != 0 {
			r.Types = append(r.Types, t)
		}
	}
	for _, f := range []*ratelimit.Failures{h.failures, h.wide} {
		if f != nil {
			r.Failures = append(r.Failures, f)
		}
	}
	return r
}
