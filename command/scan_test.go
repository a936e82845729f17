package command_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/redistest"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// scanReport is what caddy apikey scan --json prints.
type scanReport struct {
	Findings []struct {
		File        string `json:"file"`
		Repository  string `json:"repository"`
		Commit      string `json:"commit"`
		Ref         string `json:"ref"`
		Object      string `json:"object"`
		Path        string `json:"path"`
		Line        int    `json:"line"`
		InName      bool   `json:"in_name"`
		Type        string `json:"type"`
		Fingerprint string `json:"fingerprint"`
		ID          string `json:"id"`
		Status      string `json:"status"`
		OldSecret   bool   `json:"old_secret"`
		Live        bool   `json:"live"`
	} `json:"findings"`
	Skipped []struct {
		Path   string `json:"path"`
		Reason string `json:"reason"`
	} `json:"skipped"`
	Scanned int `json:"scanned"`
	Live    int `json:"live"`
}

// scan runs caddy apikey scan and checks that its output holds none of
// keys (named by their ids in failures, never shown).
func scan(t *testing.T, keys []gatewaytest.Key, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	stdout, stderr, code = gatewaytest.CLI(t, "", append([]string{"scan"}, args...)...)
	for _, k := range keys {
		if strings.Contains(stdout+stderr, k.Secret) {
			t.Fatalf("scan printed the key of %s", k.Record.ID)
		}
		if strings.Contains(stdout+stderr, strings.TrimPrefix(k.Record.Hash, "sha256:")) {
			t.Fatalf("scan printed the hash of %s", k.Record.ID)
		}
	}
	return stdout, stderr, code
}

func scanJSON(t *testing.T, keys []gatewaytest.Key, args ...string) (scanReport, int) {
	t.Helper()
	out, errOut, code := scan(t, keys, append([]string{"--json"}, args...)...)
	var r scanReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("scan --json (exit %d) printed no JSON: %v; stderr: %s", code, err, errOut)
	}
	return r, code
}

// gitRepo makes a git repository in a folder of the test's own.
func gitRepo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is not installed: scan --git runs it")
	}
	dir := t.TempDir()
	runGit(t, dir, "init", "-q", "-b", "main")
	return dir
}

// runGit runs git in dir and returns its output, trimmed.
func runGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=test", "-c", "user.email=test@example.com",
		"-c", "commit.gpgsign=false"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commitFile writes name in the repository (or removes it, for content
// nil) and commits; it returns the commit's id.
func commitFile(t *testing.T, dir, name string, content []byte, message string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if content == nil {
		runGit(t, dir, "rm", "-q", name)
	} else {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		runGit(t, dir, "add", name)
	}
	runGit(t, dir, "commit", "-q", "-m", message)
	return runGit(t, dir, "rev-parse", "HEAD")
}

// lookalike is key with its checksum changed: the same shape, not a key.
func lookalike(t *testing.T, key string) string {
	t.Helper()
	last := key[len(key)-1]
	for _, c := range "0123456789" {
		if byte(c) != last {
			if s := key[:len(key)-1] + string(c); !keyValid(s) {
				return s
			}
		}
	}
	t.Fatal("no lookalike")
	return ""
}

func keyValid(s string) bool { _, ok := keystore.Check(s); return ok }

// TestScanGitFindsKeyInHistory: a key committed and then removed is found
// by scan --git, at the commit and path where it was added, and the scan
// exits 1; the files as they are now hold no key, and scan exits 0; a
// string shaped like a key with a wrong checksum is never reported.
func TestScanGitFindsKeyInHistory(t *testing.T) {
	leaked := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_leaked"})
	decoy := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_decoy"})
	keys := []gatewaytest.Key{leaked, decoy}
	repo := gitRepo(t)
	commitFile(t, repo, "README", []byte("a project\n"), "first")
	// The lookalike stays in the tree; the real key is added, then removed.
	commitFile(t, repo, "testdata/sample.txt", []byte("not a key: "+lookalike(t, decoy.Secret)+"\n"), "a lookalike")
	added := commitFile(t, repo, "config/app.env", []byte("# settings\nAPI_KEY="+leaked.Secret+"\n"), "settings")
	// A new version of the file, the key still in it: one finding still,
	// where the key was added.
	commitFile(t, repo, "config/app.env", []byte("# settings, edited\nAPI_KEY="+leaked.Secret+"\nDEBUG=1\n"), "edit")
	commitFile(t, repo, "config/app.env", nil, "remove the settings")

	r, code := scanJSON(t, keys, "--git", repo)
	if code != 1 {
		t.Errorf("scan --git of a history holding k_leaked exited %d, want 1", code)
	}
	if len(r.Findings) != 1 {
		t.Fatalf("scan --git found %d keys, want 1 (k_leaked): %+v", len(r.Findings), r.Findings)
	}
	f := r.Findings[0]
	if f.Commit != added || f.Path != "config/app.env" || f.Line != 2 || f.Type != "prod" || !f.Live {
		t.Errorf("k_leaked found at %s:%s:%d (type %s, live %v), want %s:config/app.env:2, prod, live", f.Commit, f.Path, f.Line, f.Type, f.Live, added)
	}
	if want := strings.TrimPrefix(leaked.Record.Hash, "sha256:")[:12]; f.Fingerprint != want {
		t.Errorf("k_leaked's fingerprint is %q, want the first 12 hex digits of its hash", f.Fingerprint)
	}
	if r.Live != 1 || r.Scanned == 0 {
		t.Errorf("scan --git: live %d, scanned %d", r.Live, r.Scanned)
	}

	out, errOut, code := scan(t, keys, "--git", repo)
	if code != 1 || !strings.Contains(out, added[:12]+":config/app.env:2: prod key, fingerprint "+f.Fingerprint) {
		t.Errorf("scan --git printed (exit %d):\n%s%s", code, out, errOut)
	}

	// The tree as it is: the key is gone, the lookalike is no key.
	out, errOut, code = scan(t, keys, repo)
	if code != 0 || out != "" {
		t.Errorf("scan of a clean tree exited %d, printed %q, %q; want 0 and nothing", code, out, errOut)
	}
}

// TestScanGitFindsKeysInMessagesAndBranches: every ref is read (a branch
// never merged, a tag), and the text of commits, not only files.
func TestScanGitFindsKeysInMessagesAndBranches(t *testing.T) {
	inMessage := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_message"})
	onBranch := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_branch"})
	inTag := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_tag"})
	keys := []gatewaytest.Key{inMessage, onBranch, inTag}
	repo := gitRepo(t)
	withMessage := commitFile(t, repo, "a.txt", []byte("a\n"), "try with "+inMessage.Secret)
	runGit(t, repo, "checkout", "-q", "-b", "experiment")
	branch := commitFile(t, repo, "b.json", []byte(`{"key": "`+onBranch.Secret+`"}`), "on a branch")
	runGit(t, repo, "checkout", "-q", "main")
	runGit(t, repo, "tag", "-a", "v1", "-m", "release, key "+inTag.Secret)

	r, code := scanJSON(t, keys, "--git", repo)
	if code != 1 || len(r.Findings) != 3 {
		t.Fatalf("scan --git exited %d with %d findings, want 1 and 3 (k_message, k_branch, k_tag): %+v", code, len(r.Findings), r.Findings)
	}
	fps := map[string]string{}
	for _, k := range keys {
		fps[strings.TrimPrefix(k.Record.Hash, "sha256:")[:12]] = k.Record.ID
	}
	got := map[string]string{}
	for _, f := range r.Findings {
		got[fps[f.Fingerprint]] = f.Commit + ":" + f.Path
	}
	if got["k_message"] != withMessage+":" || got["k_branch"] != branch+":b.json" || got["k_tag"] == "" {
		t.Errorf("findings by key id: %v; want k_message in commit %s's text, k_branch in %s:b.json, k_tag in the tag", got, withMessage, branch)
	}
}

// TestScanSaysWhichRecordAndWhetherLive: with --keys, each key found is
// named by its record, with its status; revoked and unknown keys are
// reported but are not live (exit 0); an active key is (exit 1).
func TestScanSaysWhichRecordAndWhetherLive(t *testing.T) {
	revoked := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_revoked", Role: "reader", Revoked: true})
	active := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_active", Role: "reader"})
	unknown := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_unknown"})
	keys := []gatewaytest.Key{revoked, active, unknown}
	keyFile := gatewaytest.WriteKeyFile(t, revoked.Record, active.Record)

	dir := t.TempDir()
	write(t, filepath.Join(dir, "old.env"), "KEY="+revoked.Secret+"\nOTHER="+unknown.Secret+"\n")
	out, errOut, code := scan(t, keys, "--keys", keyFile, dir)
	if code != 0 {
		t.Errorf("scan of a revoked and an unknown key exited %d, want 0: %s", code, errOut)
	}
	if !strings.Contains(out, "old.env:1: dev key, fingerprint ") || !strings.Contains(out, "key k_revoked (revoked)") ||
		!strings.Contains(out, "old.env:2: dev key, fingerprint ") || !strings.Contains(out, "not in the store") || strings.Contains(out, "LIVE") {
		t.Errorf("scan printed:\n%s", out)
	}

	write(t, filepath.Join(dir, "deploy.yaml"), "api_key: "+active.Secret+"\n")
	r, code := scanJSON(t, keys, "--keys", keyFile, dir)
	if code != 1 || r.Live != 1 || len(r.Findings) != 3 {
		t.Fatalf("scan with k_active exited %d, %d live of %d; want 1, 1 of 3", code, r.Live, len(r.Findings))
	}
	for _, f := range r.Findings {
		want := map[string]string{"k_revoked": "revoked", "k_active": "active", "": "unknown"}[f.ID]
		if f.Status != want || f.Live != (f.ID == "k_active") {
			t.Errorf("finding in %s:%d: id %q, status %q, live %v", f.File, f.Line, f.ID, f.Status, f.Live)
		}
	}
}

// TestScanSkipsFoldersAndFiles: .git folders are not read file by file,
// binary files and files over --max-size are skipped, and each skip is
// said.
func TestScanSkipsFoldersAndFiles(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_skipped"})
	keys := []gatewaytest.Key{k}
	dir := t.TempDir()
	write(t, filepath.Join(dir, ".git", "config"), k.Secret+"\n")
	write(t, filepath.Join(dir, "image.bin"), "\x00\x01"+k.Secret)
	write(t, filepath.Join(dir, "big.txt"), strings.Repeat("x\n", 1024)+k.Secret)
	// A file named after a key is named masked (and its name is a
	// finding: see TestScanFindsKeysInNames).
	write(t, filepath.Join(dir, "copy-of-"+k.Secret+".bin"), "\x00")
	out, errOut, code := scan(t, keys, "--max-size", "1KiB", dir)
	if code != 1 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "copy-of-[key].bin:(name): dev key") {
		t.Errorf("scan exited %d and printed %q, want 1 and the key in copy-of-[key].bin's name alone", code, out)
	}
	for _, want := range []string{"image.bin: binary", "big.txt: larger than --max-size 1.0 KiB", "copy-of-[key].bin: binary", "(3 skipped)"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr does not say %q: %s", want, errOut)
		}
	}
	if strings.Contains(errOut, ".git") {
		t.Errorf("scan read the .git folder: %s", errOut)
	}
	// The same file, named alone and under the limit, is found.
	if _, _, code := scan(t, keys, filepath.Join(dir, "big.txt")); code != 1 {
		t.Errorf("scan of big.txt under the default --max-size exited %d, want 1", code)
	}
}

// TestScanUsageErrors: what stops a scan exits 2, never 0 or 1.
func TestScanUsageErrors(t *testing.T) {
	dir := t.TempDir()
	pasted := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_pasted"})
	for name, args := range map[string][]string{
		"a key as a path":  {pasted.Secret},
		"a key as a size":  {"--max-size", pasted.Secret, dir},
		"a key as a flag":  {"--" + pasted.Secret},
		"unknown flag":     {"--no-such-flag"},
		"missing path":     {filepath.Join(dir, "missing")},
		"not a repository": {"--git", dir},
		"bad size":         {"--max-size", "lots", dir},
		"two stores":       {"--keys", "a.json", "--redis", "localhost:1", dir},
		"missing key file": {"--keys", filepath.Join(dir, "keys.json"), dir},
	} {
		_, errOut, code := scan(t, []gatewaytest.Key{pasted}, args...)
		if code != 2 {
			t.Errorf("%s: exit %d, want 2: %s", name, code, errOut)
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestScanSaysWhetherOldSecretsWork: a rotated-out secret is live until
// its grace ends, and named as an old secret of its record.
func TestScanSaysWhetherOldSecretsWork(t *testing.T) {
	current := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_rotated", Role: "reader"})
	inGrace := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	overdue := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{})
	current.Record.PreviousHashes = []keystore.PreviousHash{
		{Hash: inGrace.Record.Hash, ValidUntil: "2099-01-01T00:00:00Z"},
		{Hash: overdue.Record.Hash, ValidUntil: "2020-01-01T00:00:00Z"},
	}
	keys := []gatewaytest.Key{current, inGrace, overdue}
	keyFile := gatewaytest.WriteKeyFile(t, current.Record)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "overdue.txt"), overdue.Secret+"\n")
	out, _, code := scan(t, keys, "--keys", keyFile, dir)
	if code != 0 || !strings.Contains(out, "key k_rotated (rotation_grace), an old secret no longer accepted (since 2020-01-01T00:00:00Z)") {
		t.Errorf("scan of an old secret past its grace exited %d, want 0; printed:\n%s", code, out)
	}
	write(t, filepath.Join(dir, "grace.txt"), inGrace.Secret+"\n")
	out, _, code = scan(t, keys, "--keys", keyFile, filepath.Join(dir, "grace.txt"))
	if code != 1 || !strings.Contains(out, "key k_rotated (rotation_grace), an old secret still accepted until 2099-01-01T00:00:00Z: LIVE") {
		t.Errorf("scan of an old secret in grace exited %d, want 1; printed:\n%s", code, out)
	}
}

// TestScanLooksKeysUpOnRedis: with --redis, a key is named by its record
// on Redis; revoked there, it is no longer live.
func TestScanLooksKeysUpOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	k := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_on_redis", Role: "writer"})
	keys := []gatewaytest.Key{k}
	if _, errOut, code := gatewaytest.CLI(t, "", "import", gatewaytest.WriteKeyFile(t, k.Record), "--redis", srv.Addr()); code != 0 {
		t.Fatalf("import: exit %d: %s", code, errOut)
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ci.yml"), "env:\n  API_KEY: "+k.Secret+"\n")
	r, code := scanJSON(t, keys, "--redis", srv.Addr(), dir)
	if code != 1 || len(r.Findings) != 1 || r.Findings[0].ID != "k_on_redis" || r.Findings[0].Status != "active" || r.Findings[0].Line != 2 {
		t.Fatalf("scan --redis exited %d with %+v, want 1 and k_on_redis active at line 2", code, r.Findings)
	}
	if _, errOut, code := gatewaytest.CLI(t, "", "revoke", "--redis", srv.Addr(), "--id", "k_on_redis"); code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, errOut)
	}
	r, code = scanJSON(t, keys, "--redis", srv.Addr(), dir)
	if code != 0 || len(r.Findings) != 1 || r.Findings[0].Status != "revoked" || r.Findings[0].Live {
		t.Errorf("scan --redis after the revocation exited %d with %+v, want 0 and k_on_redis revoked", code, r.Findings)
	}
}

// TestScanGitNamesOddPaths: paths git quotes (a tab, letters outside
// ASCII) are reported as they are.
func TestScanGitNamesOddPaths(t *testing.T) {
	k1 := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_tab"})
	k2 := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_accent"})
	repo := gitRepo(t)
	commitFile(t, repo, "a\tb.env", []byte(k1.Secret+"\n"), "tab")
	commitFile(t, repo, "réglages/clé.txt", []byte(k2.Secret+"\n"), "accents")
	r, code := scanJSON(t, []gatewaytest.Key{k1, k2}, "--git", repo)
	paths := map[string]bool{}
	for _, f := range r.Findings {
		paths[f.Path] = true
	}
	if code != 1 || len(r.Findings) != 2 || !paths["a\tb.env"] || !paths["réglages/clé.txt"] {
		t.Errorf("scan --git exited %d with paths %v, want 1 and the two paths as they are", code, paths)
	}
}

// fingerprintOf is the fingerprint scan gives k.
func fingerprintOf(k gatewaytest.Key) string {
	return strings.TrimPrefix(k.Record.Hash, "sha256:")[:12]
}

// TestScanFindsKeysInNames: a key in a file's or a folder's name (and not
// in any text) is found, named by its path, masked, once per name; so is
// a key a symbolic link points at (its text, as git keeps it), and a key
// in a path given to scan (as a pre-commit hook gives them).
func TestScanFindsKeysInNames(t *testing.T) {
	inFile := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_file_name"})
	inFolder := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_folder_name"})
	inLink := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_link"})
	keys := []gatewaytest.Key{inFile, inFolder, inLink}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "notes", inFile.Secret+".txt"), "nothing here\n")
	write(t, filepath.Join(dir, "PROD_API_x", "fine.txt"), "no key\n") // a folder shaped like no key
	write(t, filepath.Join(dir, "cache", inFolder.Secret, "a.txt"), "a\n")
	write(t, filepath.Join(dir, "cache", inFolder.Secret, "b.txt"), "b\n")
	if err := os.Symlink(inLink.Secret, filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	r, code := scanJSON(t, keys, dir)
	got := map[string]string{}
	for _, f := range r.Findings {
		rel, _ := filepath.Rel(dir, f.File)
		got[f.Fingerprint] = fmt.Sprintf("%s:%d in name %v", rel, f.Line, f.InName)
	}
	want := map[string]string{
		fingerprintOf(inFile):   "notes/[key].txt:0 in name true",
		fingerprintOf(inFolder): "cache/[key]:0 in name true",
		fingerprintOf(inLink):   "current:1 in name false",
	}
	if code != 1 || len(r.Findings) != 3 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("scan exited %d with %d findings %v; want 1 and %v", code, len(r.Findings), got, want)
	}
	out, errOut, code := scan(t, keys, dir)
	if want := filepath.Join(dir, "notes", "[key].txt") + ":(name): dev key, fingerprint " + fingerprintOf(inFile); code != 1 || !strings.Contains(out, want) {
		t.Errorf("scan printed (exit %d):\n%s%s\nwant a line with %s", code, out, errOut, want)
	}
	// As a pre-commit hook names the files committed.
	path := filepath.Join("notes", inFile.Secret+".txt")
	cmd := exec.Command(gatewaytest.CaddyBinary(t), "apikey", "scan", path)
	cmd.Dir = dir
	hook, err := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.HasPrefix(string(hook), "notes/[key].txt:(name): dev key") || strings.Contains(string(hook), inFile.Secret) {
		t.Errorf("scan of a file named after k_file_name exited %d (%v), printed %q", code, err, strings.ReplaceAll(string(hook), inFile.Secret, "<the key>"))
	}
}

// TestScanGitFindsKeysInNames: with --git, a key in a path of any commit
// (a file renamed to it, a folder, a submodule) or in a ref's name is
// found, once per path, where it first appeared, masked.
func TestScanGitFindsKeysInNames(t *testing.T) {
	renamed := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_renamed"})
	inFolder := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_git_folder"})
	inBranch := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_branch_name"})
	keys := []gatewaytest.Key{renamed, inFolder, inBranch}
	repo := gitRepo(t)
	commitFile(t, repo, "README", []byte("a project\n"), "first")
	// The same text under a new name: a blob seen before, a new path.
	runGit(t, repo, "mv", "README", renamed.Secret+".txt")
	runGit(t, repo, "commit", "-q", "-m", "rename")
	rename := runGit(t, repo, "rev-parse", "HEAD")
	folder := commitFile(t, repo, inFolder.Secret+"/a.txt", []byte("a\n"), "a")
	commitFile(t, repo, inFolder.Secret+"/b.txt", []byte("b\n"), "b")
	commitFile(t, repo, renamed.Secret+".txt", nil, "remove")
	runGit(t, repo, "branch", "try-"+inBranch.Secret)

	r, code := scanJSON(t, keys, "--git", repo)
	got := map[string]string{}
	for _, f := range r.Findings {
		got[f.Fingerprint] = fmt.Sprintf("%s|%s|%s|%d|%v", f.Commit, f.Ref, f.Path, f.Line, f.InName)
	}
	want := map[string]string{
		fingerprintOf(renamed):  rename + "||[key].txt|0|true",
		fingerprintOf(inFolder): folder + "||[key]|0|true",
		fingerprintOf(inBranch): "|refs/heads/try-[key]||0|true",
	}
	if code != 1 || len(r.Findings) != 3 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("scan --git exited %d with %d findings %v; want 1 and %v", code, len(r.Findings), got, want)
	}
	out, errOut, _ := scan(t, keys, "--git", repo)
	for _, want := range []string{
		repo + "@" + rename[:12] + ":[key].txt:(name): dev key, fingerprint " + fingerprintOf(renamed),
		repo + "@" + folder[:12] + ":[key]:(name): prod key",
		repo + "@refs/heads/try-[key]:(name): dev key",
	} {
		if !strings.Contains(out, want+"") {
			t.Errorf("scan --git printed:\n%s%s\nwant a line with %s", out, errOut, want)
		}
	}
}

// TestScanGitNamesWhatTagsReach: a key in an object no commit holds (an
// annotated tag's text, a blob or a tree a tag points at, a tag of a tag)
// is named by the ref that reaches it, never by an empty commit.
func TestScanGitNamesWhatTagsReach(t *testing.T) {
	inTag := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_tag_text"})
	inBlob := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_tagged_blob"})
	inTree := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_tagged_tree"})
	inNested := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_nested_tag"})
	keys := []gatewaytest.Key{inTag, inBlob, inTree, inNested}
	repo := gitRepo(t)
	commitFile(t, repo, "README", []byte("a project\n"), "first")
	// The key on the tag text's line 11: four header lines, a blank line, the message.
	runGit(t, repo, "tag", "-a", "v2", "-m", "release notes\n\nfive\nlines\nthen\nthe key "+inTag.Secret)
	write(t, filepath.Join(repo, "loose.txt"), inBlob.Secret+"\n")
	blob := runGit(t, repo, "hash-object", "-w", "loose.txt")
	runGit(t, repo, "tag", "-a", "blobtag", "-m", "a blob", blob)
	write(t, filepath.Join(repo, "d", "in.txt"), "x\n"+inTree.Secret+"\n")
	runGit(t, repo, "add", "d/in.txt")
	tree := runGit(t, repo, "write-tree")
	runGit(t, repo, "rm", "-q", "--cached", "d/in.txt")
	runGit(t, repo, "tag", "-a", "treetag", "-m", "a tree", tree)
	runGit(t, repo, "tag", "-a", "inner", "-m", "inner "+inNested.Secret, "HEAD")
	runGit(t, repo, "-c", "advice.nestedTag=false", "tag", "-a", "outer", "-m", "outer", "inner")
	runGit(t, repo, "tag", "-d", "inner") // reached only through outer
	for _, f := range []string{"loose.txt", "d/in.txt"} {
		os.Remove(filepath.Join(repo, f))
	}

	r, code := scanJSON(t, keys, "--git", repo)
	got := map[string]string{}
	for _, f := range r.Findings {
		got[f.Fingerprint] = fmt.Sprintf("%s|%s|%s|%s|%d", f.Commit, f.Ref, f.Object, f.Path, f.Line)
	}
	want := map[string]string{
		fingerprintOf(inTag):    "|refs/tags/v2|||11",
		fingerprintOf(inBlob):   "|refs/tags/blobtag|||1",
		fingerprintOf(inTree):   "|refs/tags/treetag||d/in.txt|2",
		fingerprintOf(inNested): "|refs/tags/outer|||6",
	}
	if code != 1 || len(r.Findings) != 4 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("scan --git exited %d with %d findings %v; want 1 and %v", code, len(r.Findings), got, want)
	}
	out, errOut, _ := scan(t, keys, "--git", repo)
	for _, want := range []string{
		repo + "@refs/tags/v2:(object text):11: prod key, fingerprint " + fingerprintOf(inTag),
		repo + "@refs/tags/blobtag:(object text):1: dev key",
		repo + "@refs/tags/treetag:d/in.txt:2: dev key",
		repo + "@refs/tags/outer:(object text):6: dev key",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scan --git printed:\n%s%s\nwant a line with %s", out, errOut, want)
		}
	}
	if strings.Contains(out, "@:") || strings.Contains(out, "::") {
		t.Errorf("scan --git printed a location with an empty field:\n%s", out)
	}
}

// TestScanPreCommitHookTakesNamesAsFiles: the pre-commit hook of
// docs/scanning.md, run as written in a repository, stops a commit that
// adds a key even when a staged file is named like a flag (--max-size=1B
// would skip the key's file, --keys=<empty store> would call it not live).
func TestScanPreCommitHookTakesNamesAsFiles(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "scanning.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, hook, _ := strings.Cut(string(doc), "```sh\n#!/bin/sh\n# .git/hooks/pre-commit")
	hook, _, _ = strings.Cut(hook, "```")
	if !strings.Contains(hook, "caddy apikey scan") {
		t.Fatal("docs/scanning.md has no pre-commit hook")
	}
	k := gatewaytest.NewKey(t, keystore.Prod, keystore.Record{ID: "k_staged"})
	bin := t.TempDir()
	if err := os.Symlink(gatewaytest.CaddyBinary(t), filepath.Join(bin, "caddy")); err != nil {
		t.Fatal(err)
	}
	for _, flagName := range []string{"--max-size=1B", "--keys=empty.json"} {
		repo := t.TempDir()
		git := func(args ...string) {
			cmd := exec.Command("git", args...)
			cmd.Dir = repo
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("git %v: %v\n%s", args, err, out)
			}
		}
		git("init", "-q")
		write(t, filepath.Join(repo, "app.env"), "TOKEN="+k.Secret+"\n")
		write(t, filepath.Join(repo, "empty.json"), `{"keys": []}`)
		write(t, filepath.Join(repo, flagName), "x\n")
		git("add", "-A")
		cmd := exec.Command("sh", "-c", "#"+hook) // the rest of the hook's first comment line
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, _ := cmd.CombinedOutput()
		if strings.Contains(string(out), k.Secret) {
			t.Fatal("the hook printed the key of k_staged")
		}
		// xargs exits 123 when the scan exits 1 or 2: any status but 0
		// stops the commit.
		if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(string(out), "app.env:1: prod key") || !strings.Contains(string(out), "1 live") {
			t.Errorf("with a staged file named %s the hook exited %d, want a failure naming app.env's live key:\n%s", flagName, cmd.ProcessState.ExitCode(), out)
		}
	}
}
