package command_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
	"github.com/moodmnky/caddy-apikey/internal/version"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// TestHelp: caddy apikey --help says what the commands manage (a key file
// or Redis) and every help page is the plugin's own: no link to Caddy's
// documentation, which says nothing of these commands, and no flag
// default that is a placeholder (--quota-per-day's -1).
func TestHelp(t *testing.T) {
	out, errOut, code := gatewaytest.CLI(t, "", "--help")
	if code != 0 || !strings.Contains(out, "in a key file (--keys <file>) or on\nRedis (--redis <address>)") {
		t.Errorf("caddy apikey --help: exit %d, stderr %q:\n%s", code, errOut, out)
	}
	for _, args := range [][]string{
		{"--help"}, {"help"}, {}, {"new", "--help"}, {"help", "new"}, {"rotate", "--help"}, {"revoke", "--help"},
		{"list", "--help"}, {"export", "--help"}, {"import", "--help"}, {"check", "--help"}, {"hash", "--help"},
		{"audit", "--help"}, {"audit", "verify", "--help"}, {"audit", "head", "--help"}, {"audit", "rotate", "--help"},
		{"version", "--help"},
	} {
		out, errOut, code := gatewaytest.CLI(t, "", args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d, stderr %q, stdout %q", args, code, errOut, out)
		}
		if strings.Contains(out, "caddyserver.com") {
			t.Errorf("%v links to Caddy's documentation:\n%s", args, out)
		}
		if strings.Contains(out, "(default -1)") {
			t.Errorf("%v shows a default of -1:\n%s", args, out)
		}
	}
	out, _, _ = gatewaytest.CLI(t, "", "new", "--help")
	if !strings.Contains(out, "--quota-per-day int            the key's own daily quota (default: the route's quota)\n") {
		t.Errorf("new --help does not say what --quota-per-day defaults to:\n%s", out)
	}
	if out2, _, _ := gatewaytest.CLI(t, "", "help", "new"); out2 != out {
		t.Errorf("help new differs from new --help:\n%s", out2)
	}
}

// TestUnknownCommand: a word that is no command (a typo) is an error with
// a non-zero exit status, suggesting the commands it is close to, or
// naming them all; never the help with exit 0, which a script would take
// for success. A key given as a command is not repeated.
func TestUnknownCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus" for "caddy apikey"; the commands are audit, check, export, hash, import, list, new, revoke, rotate, scan, version`},
		{[]string{"scna"}, `unknown command "scna" for "caddy apikey"; did you mean scan?`},
		{[]string{"lsit", "--keys", "keys.json"}, `unknown command "lsit" for "caddy apikey"; did you mean list?`},
		{[]string{"rovoke"}, `did you mean revoke?`},
		{[]string{"help", "rovoke"}, `did you mean revoke?`},
		{[]string{"audit", "verfy", "audit.log"}, `unknown command "verfy" for "caddy apikey audit"; did you mean verify?`},
		{[]string{"audit", "tail"}, `the commands are head, rotate, verify`},
		// A subcommand's own flag errors are its own.
		{[]string{"import", "keys.json", "--bogus"}, `unknown flag: --bogus`},
		{[]string{"audit", "verify", "audit.log", "--bogus"}, `unknown flag: --bogus`},
	} {
		out, errOut, code := gatewaytest.CLI(t, "", c.args...)
		if code != 1 || out != "" || errOut != "Error: "+strings.SplitN(errOut, "Error: ", 2)[1] || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 1 and %q", c.args, code, out, errOut, c.want)
		}
		if strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: want one line on stderr, got %q", c.args, errOut)
		}
	}
	key, _ := keystore.Generate(keystore.Dev)
	out, errOut, code := gatewaytest.CLI(t, "", key)
	if code != 1 || strings.Contains(out+errOut, key) || !strings.Contains(errOut, "looks like a key") {
		t.Errorf("a key as the command: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestVersion: caddy apikey version prints the plugin's version.
func TestVersion(t *testing.T) {
	out, errOut, code := gatewaytest.CLI(t, "", "version")
	if code != 0 || errOut != "" || strings.Fields(out)[0] != version.Version || version.Version != "v0.1.0" {
		t.Errorf("caddy apikey version: exit %d, stdout %q, stderr %q; want %s", code, out, errOut, version.Version)
	}
}

// TestCLIRefusesKeyAsID: an --id that is a key (pasted in the wrong place,
// perhaps with spaces or a label around it) or a key's hash is refused by
// new, rotate and revoke before anything else, and no output repeats it;
// the key file is left as it was.
func TestCLIRefusesKeyAsID(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys.json")
	key := gatewaytest.NewKeyByCLI(t, "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", "k_real")
	prodKey, _ := keystore.Generate(keystore.Prod)
	hash := keystore.Sum(key).Encode() // sha256:<64 hex digits>
	hexOnly := strings.TrimPrefix(hash, "sha256:")
	before, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	ids := map[string]string{ // the id given: the secret part that must not be repeated
		key:                 key,
		prodKey:             prodKey,
		" " + key + "\n":    key,
		"Bearer " + key:     key,
		hash:                hexOnly,
		"SHA256:" + hexOnly: hexOnly,
		hexOnly:             hexOnly,
	}
	for id, secret := range ids {
		for _, args := range [][]string{
			{"revoke", "--keys", keyFile, "--id", id},
			{"rotate", "--keys", keyFile, "--id", id},
			{"new", "--keys", keyFile, "--type", "dev", "--role", "reader", "--id", id},
		} {
			out, errOut, code := gatewaytest.CLI(t, "", args...)
			if code != 1 || strings.Contains(out+errOut, secret) || !strings.Contains(errOut, "looks like a key") {
				t.Errorf("%s --id <key or hash>: exit %d, stdout %q, stderr %q", args[0], code, out, errOut)
			}
		}
	}
	if after, _ := os.ReadFile(keyFile); !bytes.Equal(before, after) {
		t.Error("the key file changed")
	}
	// An ordinary id still works.
	if _, errOut, code := gatewaytest.CLI(t, "", "revoke", "--keys", keyFile, "--id", "k_real"); code != 0 {
		t.Errorf("revoke --id k_real: exit %d, %s", code, errOut)
	}
}

// TestCLIRefusesIDsThatDoNotShow: an id holding a character that does not
// show is refused by caddy apikey new, which leaves the key file as it
// was, and by an import, which names the record and imports nothing.
// (Caddy loading such a key file is TestKeyFileIDsThatDoNotShowAreRefused
// at the root.)
func TestCLIRefusesIDsThatDoNotShow(t *testing.T) {
	k := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw", Type: "dev", Role: "reader", Services: []string{"*"}})
	twin := gatewaytest.NewKey(t, keystore.Dev, keystore.Record{ID: "k_zw\u200b", Type: "dev", Role: "reader", Services: []string{"*"}})
	bad := gatewaytest.WriteKeyFile(t, k.Record, twin.Record)

	file := gatewaytest.WriteKeyFile(t, k.Record)
	for _, id := range []string{"k_zw\u200b", "k_\u202ezw", "k\u00a0zw", "k_zw\u2028", "k_cafe\u0301"} {
		_, errOut, code := gatewaytest.CLI(t, "", "new", "--keys", file, "--type", "dev", "--role", "reader", "--id", id)
		if code != 1 || !strings.Contains(errOut, "id:") || !(strings.Contains(errOut, "U+") || strings.Contains(errOut, "normal form C")) {
			t.Errorf("new --id %q: exit %d: %s", id, code, errOut)
		}
	}
	data, _ := os.ReadFile(file)
	var kf struct{ Keys []keystore.Record }
	if err := json.Unmarshal(data, &kf); err != nil || len(kf.Keys) != 1 {
		t.Fatalf("the key file changed: %d records, %v", len(kf.Keys), err)
	}
	_, errOut, code := gatewaytest.CLI(t, "", "import", bad, "--redis", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "keys[1]") || !strings.Contains(errOut, "U+200B") || !strings.Contains(errOut, "nothing was imported") {
		t.Errorf("import of a file with k_zw and a zero-width space: exit %d: %s", code, errOut)
	}
}
