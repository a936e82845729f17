package portal

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// Limits bound the limits a developer may give a key of their own (the
// record's rate, quota_per_day, tokens_per_day, tokens_per_minute and
// models). A bound that is not set is a field the forms do not offer: a
// key's own limit overrides the route's, so an unbounded one could raise it.
type Limits struct {
	// MaxRate is the fastest burst rate a key may be given.
	MaxRate rate.Rate
	// MaxQuotaPerDay is the largest daily quota of requests.
	MaxQuotaPerDay int64
	// MaxTokensPerDay and MaxTokensPerMinute are the largest token budgets.
	MaxTokensPerDay, MaxTokensPerMinute int64
	// Models are the models (names or * and ? patterns) a key may be
	// allowed; a key given none is given these.
	Models []string
}

// maxModels bounds the models a form may give a key.
const maxModels = 32

func (l Limits) check() error {
	for _, m := range l.Models {
		probe := keystore.Record{ID: "k_check", Hash: checkHash, Role: "reader", Models: []string{m}}
		if _, err := keystore.Compile(probe); err != nil {
			return fmt.Errorf("models: %v", err)
		}
	}
	for name, n := range map[string]int64{"max_quota_per_day": l.MaxQuotaPerDay, "max_tokens_per_day": l.MaxTokensPerDay,
		"max_tokens_per_minute": l.MaxTokensPerMinute} {
		if n < 0 {
			return fmt.Errorf("%s must not be negative", name)
		}
	}
	return nil
}

// limitsForm is what the forms send of a key's limits.
type limitsForm struct {
	Rate, QuotaPerDay, TokensPerDay, TokensPerMinute string
	Models                                           string // one a line, or comma separated
}

// keyLimits are a key's own limits, as a record holds them.
type keyLimits struct {
	rate                                    string
	quotaPerDay, tokensPerDay, tokensPerMin *int64
	models                                  []string
}

// checkLimits checks a form's limits against the policy's bounds; each
// refusal names the field.
func (p *Policy) checkLimits(f limitsForm) (keyLimits, error) {
	var k keyLimits
	l := p.Limits
	if r := strings.TrimSpace(f.Rate); r != "" {
		if l.MaxRate.IsZero() {
			return k, refuse("rate", "your operator does not let developers set a key's rate")
		}
		asked, err := rate.Parse(r)
		if err != nil {
			return k, refuse("rate", "%q is not a rate such as 10/s, 600/m or 1000/h", clip(r, 40))
		}
		if perSecond(asked) > perSecond(l.MaxRate) {
			return k, refuse("rate", "%s is faster than the most your operator allows, %s", asked, l.MaxRate)
		}
		k.rate = asked.String()
	}
	for _, n := range []struct {
		field, value, what string
		max                int64
		out                **int64
	}{
		{"quota_per_day", f.QuotaPerDay, "a daily quota of requests", l.MaxQuotaPerDay, &k.quotaPerDay},
		{"tokens_per_day", f.TokensPerDay, "a daily token budget", l.MaxTokensPerDay, &k.tokensPerDay},
		{"tokens_per_minute", f.TokensPerMinute, "a token budget per minute", l.MaxTokensPerMinute, &k.tokensPerMin},
	} {
		v := strings.TrimSpace(n.value)
		if v == "" {
			continue
		}
		if n.max <= 0 {
			return k, refuse(n.field, "your operator does not let developers set %s", n.what)
		}
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil || i < 0 {
			return k, refuse(n.field, "%q is not a whole number", clip(v, 40))
		}
		if i > n.max {
			return k, refuse(n.field, "%d is more than the most your operator allows, %d", i, n.max)
		}
		*n.out = &i
	}
	for _, m := range splitLines(strings.ReplaceAll(f.Models, ",", "\n")) {
		if len(l.Models) == 0 {
			return k, refuse("models", "your operator does not let developers choose a key's models")
		}
		if len(k.models) == maxModels {
			return k, refuse("models", "at most %d models", maxModels)
		}
		if !l.allowsModel(m) {
			return k, refuse("models", "%q is not among the models your operator allows (%s)", clip(m, 60), strings.Join(l.Models, ", "))
		}
		if !slices.Contains(k.models, m) {
			k.models = append(k.models, m)
		}
	}
	if len(k.models) == 0 && len(l.Models) > 0 {
		// No models would allow every model: a key gets the policy's.
		k.models = slices.Clone(l.Models)
	}
	return k, nil
}

// allowsModel reports whether a developer may allow a key m: a model
// name that one of the policy's patterns matches, or one of the policy's
// own patterns (a pattern of their own could match more).
func (l Limits) allowsModel(m string) bool {
	if strings.ContainsAny(m, "*?") {
		return slices.ContainsFunc(l.Models, func(p string) bool { return keystore.ModelName(p) == keystore.ModelName(m) })
	}
	probe := keystore.Record{ID: "k_check", Hash: checkHash, Role: "reader", Models: l.Models}
	k, err := keystore.Compile(probe)
	return err == nil && k.AllowsModel(m)
}

func perSecond(r rate.Rate) float64 { return float64(r.Limit) / r.Period.Seconds() }

// limitsOf is a record's limits as the forms show them.
func limitsOf(rec keystore.Record) limitsForm {
	num := func(n *int64) string {
		if n == nil {
			return ""
		}
		return strconv.FormatInt(*n, 10)
	}
	return limitsForm{Rate: rec.Rate, QuotaPerDay: num(rec.QuotaPerDay), TokensPerDay: num(rec.TokensPerDay),
		TokensPerMinute: num(rec.TokensPerMinute), Models: strings.Join(rec.Models, "\n")}
}

// limitsText says a key's limits in words; "" for none of its own.
func limitsText(rate string, quota, tokensDay, tokensMinute *int64, models []string) string {
	var parts []string
	if rate != "" {
		parts = append(parts, "rate "+rate)
	}
	if quota != nil {
		parts = append(parts, strconv.FormatInt(*quota, 10)+" requests a day")
	}
	if tokensDay != nil {
		parts = append(parts, strconv.FormatInt(*tokensDay, 10)+" tokens a day")
	}
	if tokensMinute != nil {
		parts = append(parts, strconv.FormatInt(*tokensMinute, 10)+" tokens a minute")
	}
	if len(models) > 0 {
		parts = append(parts, "models "+strings.Join(models, ", "))
	}
	return strings.Join(parts, " · ")
}

// widensLimits reports whether asked allows more than had: a limit
// raised or removed, a faster rate, a model not allowed before, or no
// models where there were some.
func widensLimits(had, asked keyLimits) bool {
	for _, n := range [][2]*int64{{had.quotaPerDay, asked.quotaPerDay}, {had.tokensPerDay, asked.tokensPerDay}, {had.tokensPerMin, asked.tokensPerMin}} {
		if n[0] != nil && (n[1] == nil || *n[1] > *n[0]) {
			return true
		}
	}
	if had.rate != "" {
		old, err1 := rate.Parse(had.rate)
		newRate, err2 := rate.Parse(asked.rate)
		if asked.rate == "" || err1 != nil || err2 != nil || perSecond(newRate) > perSecond(old) {
			return true
		}
	}
	if len(had.models) > 0 {
		if len(asked.models) == 0 {
			return true
		}
		for _, m := range asked.models {
			if !slices.Contains(had.models, m) {
				return true
			}
		}
	}
	return false
}

// apply sets a record's own limits to l.
func (l keyLimits) apply(rec *keystore.Record) {
	rec.Rate, rec.QuotaPerDay, rec.TokensPerDay, rec.TokensPerMinute, rec.Models = l.rate, l.quotaPerDay, l.tokensPerDay, l.tokensPerMin, l.models
}

// recordLimits are a record's own limits.
func recordLimits(rec keystore.Record) keyLimits {
	return keyLimits{rate: rec.Rate, quotaPerDay: rec.QuotaPerDay, tokensPerDay: rec.TokensPerDay, tokensPerMin: rec.TokensPerMinute, models: rec.Models}
}

// grantLimits are a pending grant's limits.
func grantLimits(g keystore.Grant) keyLimits {
	return keyLimits{rate: g.Rate, quotaPerDay: g.QuotaPerDay, tokensPerDay: g.TokensPerDay, tokensPerMin: g.TokensPerMinute, models: g.Models}
}

// toGrant sets a grant's limits to l.
func (l keyLimits) toGrant(g *keystore.Grant) {
	g.Rate, g.QuotaPerDay, g.TokensPerDay, g.TokensPerMinute, g.Models = l.rate, l.quotaPerDay, l.tokensPerDay, l.tokensPerMin, l.models
}

// keepUnoffered keeps, in limits asked on an edit, the key's own values of
// the limits the forms do not offer: an operator's, which an edit leaves.
func (l Limits) keepUnoffered(asked *keyLimits, had keyLimits) {
	if l.MaxRate.IsZero() {
		asked.rate = had.rate
	}
	if l.MaxQuotaPerDay <= 0 {
		asked.quotaPerDay = had.quotaPerDay
	}
	if l.MaxTokensPerDay <= 0 {
		asked.tokensPerDay = had.tokensPerDay
	}
	if l.MaxTokensPerMinute <= 0 {
		asked.tokensPerMin = had.tokensPerMin
	}
	if len(l.Models) == 0 {
		asked.models = had.models
	}
}

// offered is f without the limits the forms do not offer.
func (l Limits) offered(f limitsForm) limitsForm {
	var keep keyLimits
	l.keepUnoffered(&keep, keyLimits{rate: "-", quotaPerDay: new(int64), tokensPerDay: new(int64), tokensPerMin: new(int64), models: []string{"-"}})
	if keep.rate != "" {
		f.Rate = ""
	}
	if keep.quotaPerDay != nil {
		f.QuotaPerDay = ""
	}
	if keep.tokensPerDay != nil {
		f.TokensPerDay = ""
	}
	if keep.tokensPerMin != nil {
		f.TokensPerMinute = ""
	}
	if keep.models != nil {
		f.Models = ""
	}
	return f
}
