// Package keylist shows a key as the commands, the admin API and the
// portal list it: its id, names, grant and status, and today's quota use,
// never its hash.
package keylist

import (
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// Entry is one key as list and the admin API show it: never a hash.
type Entry struct {
	ID        string   `json:"id"`
	Name      string   `json:"name,omitempty"`
	Owner     string   `json:"owner,omitempty"`
	Type      string   `json:"type,omitempty"`
	Role      string   `json:"role"`
	Services  []string `json:"services"`
	Status    string   `json:"status"`
	ExpiresAt string   `json:"expires_at,omitempty"`
	// GraceUntil is when the last old secret stops working, in rotation grace.
	GraceUntil string `json:"grace_until,omitempty"`
	// Quota is today's use, where the admin API knows it.
	Quota *Quota `json:"quota,omitempty"`
	// QuotaByType is today's use of a record without "type", under each
	// type's limits: which apply depends on the prefix of the key presented,
	// which the record's hash does not tell.
	QuotaByType map[string]*Quota `json:"quota_by_type,omitempty"`
}

// Quota is a key's use of today's request quota.
type Quota struct {
	Limit     int64  `json:"limit"`
	Used      int64  `json:"used"`
	Remaining int64  `json:"remaining"`
	Reset     string `json:"reset"`
}

// Of lists k as it stands at now.
func Of(k *keystore.Key, now time.Time) Entry {
	l := Entry{ID: k.ID, Name: k.Name, Owner: k.Owner, Type: k.Type.String(), Role: k.Role.String(),
		Services: k.Services(), Status: k.Status(now)}
	if l.Services == nil {
		l.Services = []string{}
	}
	if !k.ExpiresAt.IsZero() {
		l.ExpiresAt = k.ExpiresAt.UTC().Format(time.RFC3339)
	}
	for _, p := range k.Previous {
		if now.Before(p.ValidUntil) && p.ValidUntil.UTC().Format(time.RFC3339) > l.GraceUntil {
			l.GraceUntil = p.ValidUntil.UTC().Format(time.RFC3339)
		}
	}
	return l
}

// QuotaOf is the daily quota use a counter result reports.
func QuotaOf(res ratelimit.Result) *Quota {
	return &Quota{Limit: res.Daily.Limit, Used: res.Daily.Limit - res.Daily.Remaining,
		Remaining: res.Daily.Remaining, Reset: res.Daily.Reset.UTC().Format(time.RFC3339)}
}
