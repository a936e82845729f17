package portal

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// roleRank orders the roles by what they allow; custom is apart.
var roleRank = map[string]int{"reader": 1, "writer": 2, "admin": 3}

// widens reports whether the grant g allows anything rec's does not: a
// higher or other kind of role, a service, a permission or an address
// rec's grant lacks. It errs on the side of widening: what it cannot show
// to be narrower waits for approval.
func widens(rec keystore.Record, g keystore.Grant) bool {
	if widensLimits(recordLimits(rec), grantLimits(g)) {
		return true
	}
	if g.Role != rec.Role {
		old, okOld := roleRank[rec.Role]
		asked, okAsked := roleRank[g.Role]
		if !okOld || !okAsked || asked > old {
			return true
		}
	}
	for _, s := range g.Services {
		if !slices.Contains(rec.Services, s) && !slices.Contains(rec.Services, "*") {
			return true
		}
	}
	// Permissions narrow a role (and are all a custom role may do): fewer
	// is narrower, none where there were some is wider.
	if len(rec.Permissions) > 0 {
		if len(g.Permissions) == 0 {
			return true
		}
		for _, p := range g.Permissions {
			if !slices.Contains(rec.Permissions, p) {
				return true
			}
		}
	}
	// An allowlist: none is any address.
	if len(rec.AllowedIPs) > 0 {
		if len(g.AllowedIPs) == 0 {
			return true
		}
		for _, a := range g.AllowedIPs {
			if !within(a, rec.AllowedIPs) {
				return true
			}
		}
	}
	return false
}

// within reports whether the address or CIDR a lies inside one of list's.
func within(a string, list []string) bool {
	p, err := prefix(a)
	if err != nil {
		return false
	}
	for _, o := range list {
		if q, err := prefix(o); err == nil && q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func prefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// grantText says a grant in words, for the pages.
func grantText(g keystore.Grant) string {
	parts := []string{"role " + g.Role, "services " + strings.Join(g.Services, ", ")}
	if len(g.Permissions) > 0 {
		parts = append(parts, "permissions "+strings.Join(g.Permissions, "; "))
	}
	if len(g.AllowedIPs) > 0 {
		parts = append(parts, "from "+strings.Join(g.AllowedIPs, ", "))
	} else {
		parts = append(parts, "from any address")
	}
	if l := limitsText(g.Rate, g.QuotaPerDay, g.TokensPerDay, g.TokensPerMinute, g.Models); l != "" {
		parts = append(parts, l)
	}
	return strings.Join(parts, " · ")
}
