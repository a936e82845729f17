package apikey

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// No image registry is reachable where the tests run, so the Dockerfile and
// compose.yaml cannot be built here. These tests check what can be checked
// without building them.

// xcaddyBuild returns the xcaddy build lines of a file.
func xcaddyBuild(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`xcaddy build v[0-9.]+ --with github\.com/moodmnky/caddy-apikey@v[0-9]+\.[0-9]+\.[0-9]+`).FindAllString(string(data), -1)
}

// TestDockerfile: pinned base images, the plugin built with the README's
// command, a non-root user, the ports and the volumes Caddy writes.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)

	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatalf("want a builder and a runtime stage, found %d FROM lines", len(froms))
	}
	for _, f := range froms {
		if !regexp.MustCompile(`^[a-z0-9./-]+:[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.-]*(@sha256:[0-9a-f]{64})?$`).MatchString(f[1]) {
			t.Errorf("base image %q is not pinned to a full version", f[1])
		}
	}
	if m := regexp.MustCompile(`FROM golang:1\.(\d+)`).FindStringSubmatch(df); m == nil || m[1] < "26" {
		t.Errorf("the builder is not Go 1.26 or newer: %v", m)
	}
	if !regexp.MustCompile(`xcaddy/cmd/xcaddy@v[0-9]+\.[0-9]+\.[0-9]+`).MatchString(df) {
		t.Error("xcaddy is not pinned")
	}

	readme := xcaddyBuild(t, "README.md")
	docker := xcaddyBuild(t, "Dockerfile")
	deploy := xcaddyBuild(t, "docs/deployment.md")
	if len(readme) != 1 || len(docker) != 1 || len(deploy) != 1 {
		t.Fatalf("want one pinned xcaddy build line in each of README.md (%v), Dockerfile (%v), docs/deployment.md (%v)", readme, docker, deploy)
	}
	if docker[0] != readme[0] || deploy[0] != readme[0] {
		t.Errorf("the builds differ: README.md %q, Dockerfile %q, docs/deployment.md %q", readme[0], docker[0], deploy[0])
	}

	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || users[len(users)-1][1] == "root" || users[len(users)-1][1] == "0" {
		t.Errorf("the image does not end as a non-root user: %v", users)
	}
	if !strings.Contains(df, "cap_net_bind_service") {
		t.Error("a non-root Caddy cannot bind 80 and 443 without cap_net_bind_service")
	}
	expose := regexp.MustCompile(`(?m)^EXPOSE\s+(.*)$`).FindStringSubmatch(df)
	for _, p := range []string{"80", "443", "443/udp"} {
		if expose == nil || !strings.Contains(" "+expose[1]+" ", " "+p+" ") {
			t.Errorf("the image does not expose %s", p)
		}
	}
	volume := regexp.MustCompile(`(?m)^VOLUME\s+(.*)$`).FindStringSubmatch(df)
	for _, v := range []string{`"/data"`, `"/config"`, `"/var/log/caddy"`, `"/etc/caddy/keys"`} {
		if volume == nil || !strings.Contains(volume[1], v) {
			t.Errorf("the image has no volume %s", v)
		}
	}
}

// TestCompose: Caddy and a pinned Redis, the ports (HTTP/3 too), and
// volumes for the data, config, audit log and key file, which survive
// docker rm.
func TestCompose(t *testing.T) {
	data, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := string(data)
	for _, want := range []string{
		`"80:80"`, `"443:443"`, `"443:443/udp"`,
		"caddy_data:/data", "caddy_config:/config", "caddy_logs:/var/log/caddy", "caddy_keys:/etc/caddy/keys",
		"build: .", "redis_data:/data", "--appendonly",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("compose.yaml lacks %s", want)
		}
	}
	if m := regexp.MustCompile(`image:\s*redis:(\S+)`).FindStringSubmatch(c); m == nil || !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+`).MatchString(m[1]) {
		t.Errorf("Redis's image is not pinned to a full version: %v", m)
	}
	if m := regexp.MustCompile(`user:\s*"?([^"\s]+)`).FindStringSubmatch(c); m == nil || strings.HasPrefix(m[1], "0") || m[1] == "root" {
		t.Errorf("the caddy service does not run as a non-root user: %v", m)
	}
	// The config it mounts exists and adapts (TestDocsCaddyfiles adapts it too).
	m := regexp.MustCompile(`-\s*(\./\S+):/etc/caddy/Caddyfile`).FindStringSubmatch(c)
	if m == nil {
		t.Fatal("compose.yaml mounts no Caddyfile")
	}
	cf, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cf), "keys file /etc/caddy/keys/keys.json") {
		t.Errorf("%s does not use the one key path, /etc/caddy/keys/keys.json", m[1])
	}
	if _, err := gatewaytest.Adapt(string(cf)); err != nil {
		t.Errorf("%s: %v", m[1], err)
	}
}

// TestOneKeyPath: the README and every page use one key file path, the
// one the deployment recipes make writable.
func TestOneKeyPath(t *testing.T) {
	for _, path := range docPages(t) {
		page := readDoc(t, path)
		if n := strings.Count(page, "/etc/caddy/keys.json"); n > 0 {
			t.Errorf("%s names /etc/caddy/keys.json %d times; the key file is /etc/caddy/keys/keys.json", path, n)
		}
	}
}
