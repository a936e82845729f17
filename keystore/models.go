package keystore

import (
	"fmt"
	"sort"
	"strings"
)

// MaxModels bounds a record's models and model_tokens_per_day entries: each
// model budget is a counter of its own.
const MaxModels = 64

// modelRule is one entry of models or model_tokens_per_day.
type modelRule struct {
	pattern string     // as written: names a model budget's counter
	match   modelParts // as splitModel reads it, for matching
	tokens  int64      // daily budget, for model_tokens_per_day
}

// compileModels checks a record's models and model budgets.
func compileModels(k *Key, rec Record) error {
	if len(rec.Models) > MaxModels {
		return fieldErr("models", "has %d entries; at most %d", len(rec.Models), MaxModels)
	}
	for i, m := range rec.Models {
		if err := checkModelPattern(m); err != nil {
			return &FieldError{Field: fmt.Sprintf("models[%d]", i), Err: err}
		}
		k.models = append(k.models, modelRule{pattern: m, match: splitModel(m)})
	}
	if len(rec.ModelTokensPerDay) > MaxModels {
		return fieldErr("model_tokens_per_day", "has %d entries; at most %d", len(rec.ModelTokensPerDay), MaxModels)
	}
	for m, n := range rec.ModelTokensPerDay {
		field := fmt.Sprintf("model_tokens_per_day[%q]", m)
		if err := checkModelPattern(m); err != nil {
			return &FieldError{Field: field, Err: err}
		}
		if n < 0 {
			return fieldErr(field, "must not be negative")
		}
		k.modelBudgets = append(k.modelBudgets, modelRule{pattern: m, match: splitModel(m), tokens: n})
	}
	// Most specific first, so "gpt-4o-mini" beats "gpt-4*"; ties by name,
	// so the choice never depends on map order.
	sort.Slice(k.modelBudgets, func(i, j int) bool {
		a, b := k.modelBudgets[i].pattern, k.modelBudgets[j].pattern
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	for _, pair := range []struct {
		field string
		n     *int64
	}{{"tokens_per_day", rec.TokensPerDay}, {"tokens_per_minute", rec.TokensPerMinute}} {
		if pair.n != nil && *pair.n < 0 {
			return fieldErr(pair.field, "must not be negative")
		}
	}
	if rec.TokensPerDay != nil {
		k.TokensPerDay, k.HasTokensPerDay = *rec.TokensPerDay, true
	}
	if rec.TokensPerMinute != nil {
		k.TokensPerMinute, k.HasTokensPerMinute = *rec.TokensPerMinute, true
	}
	return nil
}

func checkModelPattern(m string) error {
	if strings.TrimSpace(m) == "" || len(m) > 256 {
		return fmt.Errorf("%q: a model name or pattern of 1 to 256 bytes", m)
	}
	if strings.ContainsAny(m, "[]\\") {
		return fmt.Errorf("%q: a pattern has * (any text, / included) and ? (any one character), nothing else", m)
	}
	return nil
}

// defaultRegistry is the registry a model name without a host comes from,
// and defaultNamespace the namespace of one without a namespace: Ollama's.
const (
	defaultRegistry  = "registry.ollama.ai"
	defaultNamespace = "library"
)

// modelParts is a model name or pattern read as Ollama reads a name:
// [host/][namespace/]model[:tag], lower case, without a scheme, with the
// default registry and namespace filled in and the default tag (":latest")
// removed. The host is everything before the last two "/"-separated parts.
type modelParts struct {
	host, namespace, model string
}

func splitModel(m string) modelParts {
	m = strings.ToLower(strings.TrimSpace(m))
	if i := strings.Index(m, "://"); i >= 0 {
		m = m[i+3:]
	}
	m = strings.TrimSuffix(m, ":latest")
	p := modelParts{host: defaultRegistry, namespace: defaultNamespace, model: m}
	if i := strings.LastIndexByte(m, '/'); i >= 0 {
		p.model = m[i+1:]
		p.namespace = m[:i]
		if j := strings.LastIndexByte(p.namespace, '/'); j >= 0 {
			p.host, p.namespace = p.namespace[:j], p.namespace[j+1:]
		}
	}
	return p
}

// ModelName is a model name as models and model_tokens_per_day compare it:
// lower case, read as Ollama reads a name ([host/][namespace/]model[:tag]),
// without the default registry and namespace ("registry.ollama.ai/library/")
// or the default tag (":latest"), so that every name an upstream takes for
// the same model is the same name here.
func ModelName(m string) string {
	p := splitModel(m)
	switch {
	case p.host != defaultRegistry:
		return p.host + "/" + p.namespace + "/" + p.model
	case p.namespace != defaultNamespace:
		return p.namespace + "/" + p.model
	}
	return p.model
}

// matches reports whether name matches the pattern p, part by part: a
// pattern without a host matches only the default registry's models, one
// without a namespace only the library's.
func (p modelParts) matches(name modelParts) bool {
	return matchModel(p.host, name.host) && matchModel(p.namespace, name.namespace) && matchModel(p.model, name.model)
}

// matchModel reports whether name matches pattern, one part of a model
// name each: * is any text, ? is any one character.
func matchModel(pattern, name string) bool {
	// Iterative glob with backtracking to the last *.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p, mark = star+1, mark+1
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// AllowsModel reports whether the key may use model: any model when its
// record lists none. A name and a pattern compare part by part, as
// splitModel reads them: a pattern without a host matches only the
// default registry's models, one without a namespace only its library's.
func (k *Key) AllowsModel(model string) bool {
	if len(k.models) == 0 {
		return true
	}
	if strings.TrimSpace(model) == "" {
		return false
	}
	name := splitModel(model)
	for _, r := range k.models {
		if r.match.matches(name) {
			return true
		}
	}
	return false
}

// RestrictsModels reports whether the key's record lists models.
func (k *Key) RestrictsModels() bool { return len(k.models) > 0 }

// ModelBudget is the key's daily token budget for model: the most specific
// model_tokens_per_day pattern that matches it, which also names the
// counter (models matching one pattern share its budget).
func (k *Key) ModelBudget(model string) (pattern string, tokens int64, ok bool) {
	name := splitModel(model)
	for _, r := range k.modelBudgets {
		if r.match.matches(name) {
			return r.pattern, r.tokens, true
		}
	}
	return "", 0, false
}
