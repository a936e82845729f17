package portal

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// TestCheckLimits: each limit a form sends is checked against its bound,
// and a refusal names the field; a limit the policy does not bound is
// refused; no models means the policy's models.
func TestCheckLimits(t *testing.T) {
	p := Policy{Limits: Limits{MaxRate: rate.Rate{Limit: 10, Period: time.Second}, MaxQuotaPerDay: 100, Models: []string{"llama3*", "qwen2.5"}}}
	for _, c := range []struct {
		form  limitsForm
		field string // "" for accepted
	}{
		{limitsForm{Rate: "10/s", QuotaPerDay: "100", Models: "llama3:8b\nqwen2.5"}, ""},
		{limitsForm{Rate: "600/m"}, ""},
		{limitsForm{Rate: "601/m"}, "rate"},
		{limitsForm{Rate: "1/d"}, "rate"},
		{limitsForm{QuotaPerDay: "101"}, "quota_per_day"},
		{limitsForm{QuotaPerDay: "-1"}, "quota_per_day"},
		{limitsForm{TokensPerDay: "1"}, "tokens_per_day"},
		{limitsForm{Models: "llama*"}, "models"},
		{limitsForm{Models: "llama3*"}, ""},
		{limitsForm{Models: "mistral"}, "models"},
	} {
		_, err := p.checkLimits(c.form)
		var fe *formError
		if c.field == "" && err != nil || c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) {
			t.Errorf("%+v: %v, want a refusal of %q", c.form, err, c.field)
		}
	}
	got, err := p.checkLimits(limitsForm{})
	if err != nil || strings.Join(got.models, ",") != "llama3*,qwen2.5" {
		t.Errorf("no models: %v %v, want the policy's", got.models, err)
	}
}

// TestWidensLimits: a raised or removed limit, a faster rate, a model
// added or every model allowed is wider, and waits for approval on an
// approved production key; a lower one is not.
func TestWidensLimits(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	had := keyLimits{rate: "10/s", quotaPerDay: n(100), models: []string{"llama3"}}
	for _, c := range []struct {
		asked keyLimits
		wider bool
	}{
		{keyLimits{rate: "10/s", quotaPerDay: n(100), models: []string{"llama3"}}, false},
		{keyLimits{rate: "5/s", quotaPerDay: n(50), models: []string{"llama3"}, tokensPerDay: n(5)}, false},
		{keyLimits{rate: "10/s", quotaPerDay: n(101), models: []string{"llama3"}}, true},
		{keyLimits{rate: "10/s", models: []string{"llama3"}}, true},
		{keyLimits{rate: "11/s", quotaPerDay: n(100), models: []string{"llama3"}}, true},
		{keyLimits{quotaPerDay: n(100), models: []string{"llama3"}}, true},
		{keyLimits{rate: "10/s", quotaPerDay: n(100), models: []string{"llama3", "qwen2.5"}}, true},
		{keyLimits{rate: "10/s", quotaPerDay: n(100)}, true},
	} {
		if got := widensLimits(had, c.asked); got != c.wider {
			t.Errorf("%+v over %+v: wider %v, want %v", c.asked, had, got, c.wider)
		}
	}
	// Through widens, as an edit of an approved production key asks.
	rec := keystore.Record{Role: "reader", Services: []string{"echo"}, QuotaPerDay: n(100)}
	if !widens(rec, keystore.Grant{Role: "reader", Services: []string{"echo"}, QuotaPerDay: n(200)}) {
		t.Error("a raised quota_per_day does not wait for approval")
	}
	if widens(rec, keystore.Grant{Role: "reader", Services: []string{"echo"}, QuotaPerDay: n(10)}) {
		t.Error("a lowered quota_per_day waits for approval")
	}
}
