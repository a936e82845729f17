package scanning_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/testtools"
)

// gitleaksVersion is the gitleaks the rules are tested with; .ci/run
// installs it.
const gitleaksVersion = "v8.30.1"

// gitleaks is the gitleaks binary: in PATH, or where go install puts it.
// Without it the test is skipped, saying so, or fails when
// APIKEY_REQUIRE_GITLEAKS is set (as CI does).
func gitleaks(t *testing.T) string {
	t.Helper()
	if path, err := exec.LookPath("gitleaks"); err == nil {
		return path
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for gopath := range strings.SplitSeq(strings.TrimSpace(string(out)), string(os.PathListSeparator)) {
			path := filepath.Join(gopath, "bin", "gitleaks")
			if _, err := os.Stat(path); err == nil {
				return path
			}
		}
	}
	return testtools.Require(t, "gitleaks", "APIKEY_REQUIRE_GITLEAKS",
		"go install github.com/zricethezav/gitleaks/v8@"+gitleaksVersion)
}

// gitleaksFinding is a finding of gitleaks' JSON report.
type gitleaksFinding struct {
	RuleID    string
	File      string
	StartLine int
	Commit    string
	Secret    string
}

// runGitleaks runs gitleaks with the shipped rules (mode "git" or "dir"
// on target) and returns its findings and exit status. Without -v,
// gitleaks prints no finding: they are in the report, read here and never
// printed.
func runGitleaks(t *testing.T, mode, target string) ([]gitleaksFinding, int) {
	t.Helper()
	bin := gitleaks(t)
	rules, err := filepath.Abs("gitleaks.toml")
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(bin, mode, "--config", rules, "--no-banner", "--no-color",
		"--report-format", "json", "--report-path", report, target)
	cmd.Dir = t.TempDir() // no .gitleaksignore of anyone's
	out, err := cmd.CombinedOutput()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("gitleaks %s exited %d and wrote no report: %v\n%s", mode, code, err, out)
	}
	var findings []gitleaksFinding
	if err := json.Unmarshal(data, &findings); err != nil {
		t.Fatalf("gitleaks report: %v", err)
	}
	return findings, code
}

// TestGitleaksFindsPlantedKey: gitleaks with the shipped rules finds a key
// committed and then removed, in the commit that added it; it reports a
// lookalike too (it cannot check checksums: docs/scanning.md says so), and
// not a key inside a longer word, a placeholder or a public demo key.
func TestGitleaksFindsPlantedKey(t *testing.T) {
	s := newSamples(t)
	repo := gitRepo(t)
	commitFile(t, repo, "README", "a project\nThe demo key: "+demoKey+"\nA placeholder: "+s.filler+"\n", "first")
	added := commitFile(t, repo, "deploy/settings.env", "# settings\nAPI_KEY="+s.planted+"\nOTHER="+s.inWord+"\n", "settings")
	commitFile(t, repo, "deploy/settings.env", "", "remove the settings")
	commitFile(t, repo, "notes.txt", "copied wrong: "+s.lookalike+"\n", "notes")

	findings, code := runGitleaks(t, "git", repo)
	if code != 1 {
		t.Errorf("gitleaks git exited %d, want 1 (leaks found)", code)
	}
	found := map[string]gitleaksFinding{}
	for _, f := range findings {
		found[s.name(f.Secret)] = f
		if f.RuleID != "caddy-apikey" {
			t.Errorf("%s reported by rule %q", s.name(f.Secret), f.RuleID)
		}
	}
	if f, ok := found["the planted key"]; !ok {
		t.Error("gitleaks did not find the planted key in the repository's history")
	} else if f.Commit != added || f.File != "deploy/settings.env" || f.StartLine != 2 {
		t.Errorf("the planted key found at %s:%s:%d, want %s:deploy/settings.env:2", f.Commit, f.File, f.StartLine, added)
	}
	if _, ok := found["the lookalike"]; !ok {
		t.Error("gitleaks did not report the lookalike: docs/scanning.md says it does")
	}
	if len(findings) != 2 {
		var names []string
		for _, f := range findings {
			names = append(names, s.name(f.Secret))
		}
		t.Errorf("gitleaks reported %v, want the planted key and the lookalike only", names)
	}
}

// TestGitleaksFindsNothingInProject: gitleaks with the shipped rules on
// the project's own files reports nothing: its only keys are the public
// demo keys and test vectors the rules allow.
func TestGitleaksFindsNothingInProject(t *testing.T) {
	dir := projectFiles(t)
	findings, code := runGitleaks(t, "dir", dir)
	for _, f := range findings {
		if rel, err := filepath.Rel(dir, f.File); err == nil {
			f.File = rel
		}
		// The secret is not shown: it could be a real key committed by mistake.
		t.Errorf("gitleaks reports %s:%d (rule %s): a key of this project that the rules do not allow (add it to scanning/gitleaks.toml and scanning/trufflehog.yaml if it is public, or remove it)", f.File, f.StartLine, f.RuleID)
	}
	if code != 0 {
		t.Errorf("gitleaks dir exited %d, want 0", code)
	}
}
