package kubecreds

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/pkg/failure"
	"gitlab.com/ferry-ci/ferry/pkg/redact"
)

const saToken = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZlcnJ5In0.ZmVycnktdGVzdC10b2tlbi1wYXlsb2Fk.c2lnbmF0dXJlLW5vdC1yZWFs"

func readKubeconfig(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "kubeconfigs", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func load(t *testing.T, vars map[string]string, opt Options, scripts ...string) (*Creds, error) {
	t.Helper()
	return Load(Input{Vars: vars, Scripts: scripts}, opt)
}

func TestDecodeForms(t *testing.T) {
	yaml := readKubeconfig(t, "sa-token.yaml")
	b := []byte(yaml)
	wrap := func(s string) string { // like `base64` without -w 0
		var out strings.Builder
		for len(s) > 76 {
			out.WriteString(s[:76] + "\n")
			s = s[76:]
		}
		return out.String() + s + "\n"
	}
	forms := map[string]string{
		"std padded":           base64.StdEncoding.EncodeToString(b),
		"std unpadded":         base64.RawStdEncoding.EncodeToString(b),
		"url padded":           base64.URLEncoding.EncodeToString(b),
		"url unpadded":         base64.RawURLEncoding.EncodeToString(b),
		"trailing newline":     base64.StdEncoding.EncodeToString(b) + "\n",
		"crlf and spaces":      "  " + base64.StdEncoding.EncodeToString(b) + "\r\n",
		"wrapped at 76":        wrap(base64.StdEncoding.EncodeToString(b)),
		"plain yaml":           yaml,
		"plain yaml, no final": strings.TrimSpace(yaml),
	}
	for name, v := range forms {
		t.Run(name, func(t *testing.T) {
			got, _, err := Decode(v)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(got)) != strings.TrimSpace(yaml) {
				t.Fatalf("decoded wrong: %q", got)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	good := base64.StdEncoding.EncodeToString([]byte(readKubeconfig(t, "sa-token.yaml")))
	cases := map[string]struct{ value, want string }{
		"bad byte":     {good[:17] + "!" + good[18:], "invalid base64 at byte 18: \"!\""},
		"space inside": {good[:40] + " " + good[41:], "invalid base64 at byte 41: a space"},
		"mixed":        {"abcd+efg-hij", "mixes the standard"},
		"after pad":    {"abcd==ef", "invalid base64 at byte 7: data after '='"},
		"truncated":    {strings.TrimRight(good, "=")[:40] + "A", "not a whole number of bytes"},
		"empty":        {"  \n", "empty"},
		"binary":       {"abc\x01def", "byte 0x01"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, _, err := Decode(c.value)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

func TestLoadBase64Kubeconfig(t *testing.T) {
	yaml := readKubeconfig(t, "sa-token.yaml")
	value := base64.StdEncoding.EncodeToString([]byte(yaml))
	c, err := load(t, map[string]string{"KUBECONFIG": value}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != "KUBECONFIG (base64)" || c.Server() != "https://127.0.0.1:6443" || c.Namespace() != "example" {
		t.Fatalf("source %q server %q namespace %q", c.Source, c.Server(), c.Namespace())
	}
	data, err := c.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AuthInfos["gitlab-example"].Token != saToken || len(cfg.Clusters["example"].CertificateAuthorityData) == 0 {
		t.Fatal("materialized kubeconfig lost the token or the CA")
	}
	if bytes.Contains(data, []byte("LocationOfOrigin")) || bytes.Contains(data, []byte("certificate-authority:")) {
		t.Fatalf("materialized kubeconfig refers to files:\n%s", data)
	}
	// Secrets: the value, the decoded kubeconfig, the token and their
	// encodings; redacting the whole kubeconfig text leaves no token.
	for _, want := range []string{value, yaml, saToken} {
		if !contains(c.Secrets, want) {
			t.Errorf("secrets lack %.30q...", want)
		}
	}
	var out bytes.Buffer
	w := redact.NewWriter(&out, redact.AllVariants(c.Secrets...))
	w.Write(data)
	w.Write([]byte("\n" + value + "\n"))
	w.Close()
	if strings.Contains(out.String(), saToken) || strings.Contains(out.String(), value) {
		t.Fatalf("secret survived redaction:\n%s", out.String())
	}
}

func TestLoadFileVariableYAML(t *testing.T) {
	yaml := readKubeconfig(t, "sa-token.yaml")
	c, err := Load(Input{Vars: map[string]string{"KUBECONFIG": yaml}, FileVars: map[string]bool{"KUBECONFIG": true}}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != "KUBECONFIG (File variable, YAML)" {
		t.Fatalf("source %q", c.Source)
	}
}

func TestLoadRenamedVariableAndSources(t *testing.T) {
	value := base64.StdEncoding.EncodeToString([]byte(readKubeconfig(t, "sa-token.yaml")))
	opt := DefaultOptions()
	opt.Variable = "DEPLOY_KUBECONFIG"
	c, err := load(t, map[string]string{"DEPLOY_KUBECONFIG": value, "KUBECONFIG": "garbage!"}, opt)
	if err != nil || c == nil || c.Variable != "DEPLOY_KUBECONFIG" {
		t.Fatalf("c=%v err=%v", c, err)
	}
	opt = DefaultOptions()
	opt.Sources = []string{SourceClusterVars}
	c, err = load(t, map[string]string{"KUBECONFIG": value}, opt)
	if err != nil || c != nil {
		t.Fatalf("disabled source used: c=%v err=%v", c, err)
	}
}

func TestNoKubernetesVariables(t *testing.T) {
	c, err := load(t, map[string]string{"CI": "true"}, DefaultOptions())
	if c != nil || err != nil {
		t.Fatalf("c=%v err=%v", c, err)
	}
	// A host path set by the admin is not a credential.
	c, err = load(t, map[string]string{"KUBECONFIG": "/home/gitlab-runner/.kube/config"}, DefaultOptions())
	if c != nil || err != nil {
		t.Fatalf("host path: c=%v err=%v", c, err)
	}
}

func TestClusterVars(t *testing.T) {
	ca := string(mustDecode(t, strings.Fields(strings.SplitAfter(readKubeconfig(t, "sa-token.yaml"), "certificate-authority-data:")[1])[0]))
	for _, caVar := range []string{"KUBE_CA_PEM", "KUBE_CA_PEM_FILE"} {
		c, err := load(t, map[string]string{
			"KUBE_URL": "https://127.0.0.1:6443", "KUBE_TOKEN": saToken, caVar: ca, "KUBE_NAMESPACE": "example",
		}, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		if c.Source != "KUBE_URL/KUBE_TOKEN/"+caVar || c.Namespace() != "example" || c.Config.CurrentContext != "gitlab-deploy" {
			t.Fatalf("%+v", c)
		}
		if string(c.Config.Clusters["gitlab-deploy"].CertificateAuthorityData) != ca || !contains(c.Secrets, saToken) {
			t.Fatal("CA or token lost")
		}
	}
	_, err := load(t, map[string]string{"KUBE_URL": "https://127.0.0.1:6443"}, DefaultOptions())
	wantBuildError(t, err, "KUBE_TOKEN")
	_, err = load(t, map[string]string{"KUBE_URL": "127.0.0.1:6443", "KUBE_TOKEN": "x"}, DefaultOptions())
	wantBuildError(t, err, "KUBE_URL")
	_, err = load(t, map[string]string{"KUBE_URL": "https://a", "KUBE_TOKEN": "x", "KUBE_CA_PEM_FILE": "not pem"}, DefaultOptions())
	wantBuildError(t, err, "KUBE_CA_PEM_FILE")
}

func TestContexts(t *testing.T) {
	agent := readKubeconfig(t, "agent.yaml")
	_, err := load(t, map[string]string{"KUBECONFIG": agent}, DefaultOptions())
	wantBuildError(t, err, "KUBECONFIG", "no current-context", "KUBE_CONTEXT", "group/agents:prod, group/agents:staging")

	c, err := load(t, map[string]string{"KUBECONFIG": agent, "KUBE_CONTEXT": "group/agents:staging", "KUBE_NAMESPACE": "stage"}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.CurrentContext != "group/agents:staging" || c.Namespace() != "stage" {
		t.Fatalf("context %q namespace %q", c.Config.CurrentContext, c.Namespace())
	}
	_, err = load(t, map[string]string{"KUBECONFIG": agent, "KUBE_CONTEXT": "nope"}, DefaultOptions())
	wantBuildError(t, err, "KUBE_CONTEXT", `"nope"`, "group/agents:prod")

	// The job selects the context itself: accepted, left unselected.
	c, err = load(t, map[string]string{"KUBECONFIG": agent}, DefaultOptions(), "kubectl config use-context group/agents:prod")
	if err != nil || !c.NeedsContext {
		t.Fatalf("c=%+v err=%v", c, err)
	}
}

func TestNotAKubeconfig(t *testing.T) {
	dep := readKubeconfig(t, "not-a-kubeconfig.yaml")
	_, err := load(t, map[string]string{"KUBECONFIG": base64.StdEncoding.EncodeToString([]byte(dep))}, DefaultOptions())
	wantBuildError(t, err, "KUBECONFIG", "valid base64 but decodes to something that is not a kubeconfig", "no cluster")
	_, err = load(t, map[string]string{"KUBECONFIG": base64.StdEncoding.EncodeToString([]byte("\x00\x01binary garbage\xff"))}, DefaultOptions())
	wantBuildError(t, err, "KUBECONFIG", "not a kubeconfig")
	_, err = load(t, map[string]string{"KUBECONFIG": dep}, DefaultOptions())
	wantBuildError(t, err, "KUBECONFIG", "the value is not a kubeconfig")
	_, err = load(t, map[string]string{"KUBECONFIG": "aGVsbG8*"}, DefaultOptions())
	wantBuildError(t, err, "KUBECONFIG", "invalid base64 at byte 8")
}

func TestPolicy(t *testing.T) {
	cases := []struct {
		file string
		want []string
	}{
		{"exec-plugin.yaml", []string{"exec credential plugin", "/bin/sh", "--kube-allow-exec"}},
		{"auth-provider.yaml", []string{"auth-provider", "oidc"}},
		{"file-ref-ca.yaml", []string{"/etc/kubernetes/pki/ca.crt", "certificate-authority-data"}},
		{"file-ref-key.yaml", []string{"/root/.kube/admin.key", "client-key"}},
		{"file-ref-token.yaml", []string{"tokenFile"}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			_, err := load(t, map[string]string{"KUBECONFIG": readKubeconfig(t, c.file)}, DefaultOptions())
			wantBuildError(t, err, append([]string{"KUBECONFIG"}, c.want...)...)
		})
	}
	allow := DefaultOptions()
	allow.AllowExec = true
	for _, f := range []string{"exec-plugin.yaml", "auth-provider.yaml"} {
		if _, err := load(t, map[string]string{"KUBECONFIG": readKubeconfig(t, f)}, allow); err != nil {
			t.Errorf("%s with --kube-allow-exec: %v", f, err)
		}
	}
	// The auth-provider's settings are secrets.
	c, _ := load(t, map[string]string{"KUBECONFIG": readKubeconfig(t, "auth-provider.yaml")}, allow)
	if !contains(c.Secrets, "oidc-id-token-secret-value") {
		t.Error("auth-provider id-token not registered as a secret")
	}

	c, err := load(t, map[string]string{"KUBECONFIG": readKubeconfig(t, "insecure.yaml")}, DefaultOptions())
	if err != nil || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "insecure-skip-tls-verify") {
		t.Fatalf("insecure: c=%+v err=%v", c, err)
	}
	refuse := DefaultOptions()
	refuse.RefuseInsecure = true
	_, err = load(t, map[string]string{"KUBECONFIG": readKubeconfig(t, "insecure.yaml")}, refuse)
	wantBuildError(t, err, "insecure-skip-tls-verify")
}

func TestClientKeySecrets(t *testing.T) {
	c, err := load(t, map[string]string{"KUBECONFIG": readKubeconfig(t, "client-cert.yaml")}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	key := string(c.Config.AuthInfos["admin"].ClientKeyData)
	if !strings.Contains(key, "PRIVATE KEY") {
		t.Fatal("test data has no key")
	}
	var out bytes.Buffer
	w := redact.NewWriter(&out, redact.AllVariants(c.Secrets...))
	w.Write([]byte("cat key:\n" + key + "\nview --raw: " + base64.StdEncoding.EncodeToString([]byte(key)) + "\n"))
	w.Close()
	for _, line := range strings.Split(key, "\n") {
		if line != "" && !strings.HasPrefix(line, "-----") && strings.Contains(out.String(), line) {
			t.Fatalf("key line %q not masked:\n%s", line, out.String())
		}
	}
}

func TestWriteFile(t *testing.T) {
	c, err := load(t, map[string]string{"KUBECONFIG": readKubeconfig(t, "sa-token.yaml")}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "job", "kubeconfig")
	if err := c.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v err %v", st.Mode(), err)
	}
	if d, _ := os.Stat(filepath.Dir(p)); d.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", d.Mode())
	}
	if _, err := clientcmd.LoadFromFile(p); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestPreflightUnreachable(t *testing.T) {
	// A port nobody listens on: bind one, close it.
	yaml := strings.Replace(readKubeconfig(t, "sa-token.yaml"), "https://127.0.0.1:6443", "https://127.0.0.1:1", 1)
	c, err := load(t, map[string]string{"KUBECONFIG": yaml}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Preflight(context.Background(), c, 2*time.Second)
	wantBuildError(t, err, "KUBECONFIG", "cannot reach the API server https://127.0.0.1:1")
}

func TestIdentityLine(t *testing.T) {
	id := Identity{Server: "https://127.0.0.1:6443", Version: "v1.37.2", User: "system:serviceaccount:example:gitlab-example", Namespace: "example"}
	want := "Kubernetes https://127.0.0.1:6443 (v1.37.2) as system:serviceaccount:example:gitlab-example, namespace example"
	if id.String() != want {
		t.Fatalf("%q", id.String())
	}
}

func wantBuildError(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	if !failure.IsBuild(err) {
		t.Errorf("%v: not a build failure", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "ferry: ") {
		t.Errorf("not one `ferry: ` line: %q", msg)
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q lacks %q", msg, p)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func mustDecode(t *testing.T, s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
