package scanning_test

import (
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// trufflehogDetector is the part of a TruffleHog custom detector the
// shipped one sets.
type trufflehogDetector struct {
	Name                  string            `yaml:"name"`
	Keywords              []string          `yaml:"keywords"`
	Regex                 map[string]string `yaml:"regex"`
	Entropy               float64           `yaml:"entropy"`
	ExcludeRegexesCapture []string          `yaml:"exclude_regexes_capture"`
}

// detector reads scanning/trufflehog.yaml, strictly: a field TruffleHog
// would not know is refused.
func detector(t *testing.T) (trufflehogDetector, *regexp.Regexp, []*regexp.Regexp) {
	t.Helper()
	f, err := os.Open("trufflehog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var doc struct {
		Detectors []trufflehogDetector `yaml:"detectors"`
	}
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("trufflehog.yaml: %v", err)
	}
	if len(doc.Detectors) != 1 || len(doc.Detectors[0].Regex) != 1 {
		t.Fatalf("trufflehog.yaml: want one detector with one regex, have %+v", doc.Detectors)
	}
	d := doc.Detectors[0]
	re := regexp.MustCompile(d.Regex["key"])
	var excludes []*regexp.Regexp
	for _, e := range d.ExcludeRegexesCapture {
		excludes = append(excludes, regexp.MustCompile(e))
	}
	return d, re, excludes
}

// trufflehogFinds is what the detector reports in text, as TruffleHog
// applies it: keywords first (any, case-insensitive), then the regular
// expression's capture, dropped when its Shannon entropy is under the
// floor or when an exclude regex matches it.
func trufflehogFinds(d trufflehogDetector, re *regexp.Regexp, excludes []*regexp.Regexp, text string) []string {
	hasKeyword := false
	for _, k := range d.Keywords {
		hasKeyword = hasKeyword || strings.Contains(strings.ToLower(text), strings.ToLower(k))
	}
	if !hasKeyword {
		return nil
	}
	var found []string
next:
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		if shannon(m[1]) < d.Entropy {
			continue
		}
		for _, e := range excludes {
			if e.MatchString(m[1]) {
				continue next
			}
		}
		found = append(found, m[1])
	}
	return found
}

// shannon is the Shannon entropy of s in bits a character, as TruffleHog
// and gitleaks compute it.
func shannon(s string) float64 {
	counts := map[rune]int{}
	for _, r := range s {
		counts[r]++
	}
	var h float64
	for _, c := range counts {
		p := float64(c) / float64(len(s))
		h -= p * math.Log2(p)
	}
	return h
}

// TestTrufflehogDetectorFindsKeys: TruffleHog cannot be installed here
// (neither Debian nor the Go module proxy has it), so the detector's
// regular expression, entropy floor and excluded keys are applied from Go
// (TruffleHog is Go, with Go's regexp) to the samples gitleaks is tested
// on.
func TestTrufflehogDetectorFindsKeys(t *testing.T) {
	d, re, excludes := detector(t)
	if d.Name == "" || d.Entropy <= 0 {
		t.Errorf("the detector has no name or no entropy floor: %+v", d)
	}
	s := newSamples(t)
	for text, want := range map[string]string{
		"API_KEY=" + s.planted + "\n":        "the planted key",
		`{"key": "` + s.planted + `"}`:       "the planted key",
		"Authorization: Bearer " + s.planted: "the planted key",
		"copied wrong: " + s.lookalike:       "the lookalike", // a regular expression cannot check the checksum
		"OTHER=" + s.inWord:                  "",
		"placeholder " + s.filler:            "",
		"the demo key " + demoKey:            "",
		"longer " + s.planted + "a":          "",
	} {
		found := trufflehogFinds(d, re, excludes, text)
		var names []string
		for _, f := range found {
			names = append(names, s.name(f))
		}
		if (want == "" && len(found) != 0) || (want != "" && (len(found) != 1 || names[0] != want)) {
			t.Errorf("in a text with %s, the detector finds %v", map[bool]string{true: "no key", false: want}[want == ""], names)
		}
	}
	// The entropy floor never drops a key: a key's random part is 30
	// characters of 62.
	for range 2000 {
		k, err := keystore.Generate(keystore.Dev)
		if err != nil {
			t.Fatal(err)
		}
		if h := shannon(k); h < d.Entropy+0.5 {
			t.Fatalf("a generated key has an entropy of %.2f bits, too close to the floor %.2f", h, d.Entropy)
		}
	}
}

// TestTrufflehogDetectorFindsNothingInProject: in the project's own
// files, the detector finds nothing: what its regular expression matches
// is a placeholder under the entropy floor or a public key it excludes.
func TestTrufflehogDetectorFindsNothingInProject(t *testing.T) {
	d, re, excludes := detector(t)
	dir := projectFiles(t)
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if found := trufflehogFinds(d, re, excludes, string(data)); len(found) > 0 {
			rel, _ := filepath.Rel(dir, path)
			t.Errorf("the TruffleHog detector finds %d key(s) in %s that it does not exclude (add them to scanning/trufflehog.yaml and scanning/gitleaks.toml if they are public, or remove them)", len(found), rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestScannerRulesAgree: the TruffleHog detector and the gitleaks rule
// have the same regular expression, entropy floor and allowed keys.
func TestScannerRulesAgree(t *testing.T) {
	d, _, _ := detector(t)
	toml, err := os.ReadFile("gitleaks.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(toml)
	inner := strings.TrimSuffix(strings.TrimPrefix(d.Regex["key"], `\b(`), `)\b`)
	if !strings.Contains(text, "regex = '''"+`\b`+inner+`\b`+"'''") {
		t.Errorf("gitleaks.toml's regex is not the detector's %s", d.Regex["key"])
	}
	if !regexp.MustCompile(`(?m)^entropy = ` + regexp.QuoteMeta(strconv.FormatFloat(d.Entropy, 'f', -1, 64)) + `$`).MatchString(text) {
		t.Errorf("gitleaks.toml's entropy is not the detector's %v", d.Entropy)
	}
	allowed := regexp.MustCompile(`'''(\^[^']*\$)'''`).FindAllStringSubmatch(text, -1)
	if len(allowed) != len(d.ExcludeRegexesCapture) {
		t.Fatalf("gitleaks.toml allows %d keys, trufflehog.yaml excludes %d", len(allowed), len(d.ExcludeRegexesCapture))
	}
	for i, a := range allowed {
		if a[1] != d.ExcludeRegexesCapture[i] {
			t.Errorf("allowed key %d differs between gitleaks.toml and trufflehog.yaml", i+1)
		}
	}
}
