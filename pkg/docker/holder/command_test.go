package holder

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeployTargets: which command lines are deploys, and of what.
func TestDeployTargets(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "My.App")
	named := filepath.Join(dir, "named")
	withEnv := filepath.Join(dir, "withenv")
	for _, d := range []string{app, named, withEnv} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(filepath.Join(app, "docker-compose.yml"), []byte("services: {}\n"), 0o644)
	os.WriteFile(filepath.Join(named, "compose.yaml"), []byte("# x\nname: \"shop\"\nservices: {}\n"), 0o644)
	os.WriteFile(filepath.Join(withEnv, "docker-compose.yml"), []byte("services: {}\n"), 0o644)
	os.WriteFile(filepath.Join(withEnv, ".env"), []byte("A=1\nCOMPOSE_PROJECT_NAME=fromdotenv\n"), 0o644)
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("COMPOSE_PROJECT_NAME=leaked\n"), 0o600)
	linked := filepath.Join(dir, "linked")
	os.MkdirAll(linked, 0o755)
	os.Symlink(secret, filepath.Join(linked, ".env"))

	outside := filepath.Join(t.TempDir(), "outside")
	os.MkdirAll(outside, 0o755)
	os.WriteFile(filepath.Join(outside, ".env"), []byte("COMPOSE_PROJECT_NAME=runnerfile\n"), 0o600)
	os.WriteFile(filepath.Join(outside, "compose.yaml"), []byte("name: runnerfile\n"), 0o600)
	noEnv := func(string) string { return "" }
	cases := []struct {
		argv string
		env  func(string) string
		cwd  string
		want string
	}{
		{"/usr/bin/python3 /usr/bin/docker-compose -p guardapp up -d", noEnv, app, "compose project guardapp"},
		{"/usr/bin/python3 /usr/bin/docker-compose --verbose --project-name=Web_1 up -d", noEnv, app, "compose project web_1"},
		{"/usr/bin/python3 /usr/bin/docker-compose up -d", noEnv, app, "compose project myapp"},
		{"/usr/bin/python3 /usr/bin/docker-compose -f " + filepath.Join(named, "compose.yaml") + " up", noEnv, app, "compose project shop"},
		{"/root/.docker/cli-plugins/docker-compose compose up -d", noEnv, named, "compose project shop"},
		{"docker compose --ansi never down", noEnv, withEnv, "compose project fromdotenv"},
		{"docker-compose up", func(k string) string {
			if k == "COMPOSE_PROJECT_NAME" {
				return "fromenv"
			}
			return ""
		}, app, "compose project fromenv"},
		{"docker-compose up -d", noEnv, linked, "compose project linked"}, // the .env symlink is not followed
		// Files outside the project dir are not read: the job names them.
		{"docker-compose --project-directory " + outside + " up -d", noEnv, app, "compose project outside"},
		{"docker-compose -f " + filepath.Join(outside, "compose.yaml") + " up -d", noEnv, app, "compose project outside"},
		{"docker-compose -p x ps", noEnv, app, ""},
		{"docker-compose -p x logs -f", noEnv, app, ""},
		{"docker-compose -p x pull", noEnv, app, ""},
		{"docker-compose -p x config", noEnv, app, ""},
		{"docker --host unix:///x stack deploy --with-registry-auth -c docker-stack.yml guardstack", noEnv, app, "stack guardstack"},
		{"docker stack rm a b", noEnv, app, "stack a,stack b"},
		{"docker stack ps guardstack", noEnv, app, ""},
		{"docker ps", noEnv, app, ""},
		{"docker run --rm busybox true", noEnv, app, ""},
	}
	for _, c := range cases {
		var got []string
		for _, tg := range DeployTargets(strings.Fields(c.argv), c.env, c.cwd, dir) {
			got = append(got, tg.String())
		}
		if g := strings.Join(got, ","); g != c.want {
			t.Errorf("%s (in %s): %q, want %q", c.argv, filepath.Base(c.cwd), g, c.want)
		}
	}
}
