package kubectl

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// seed003 is seed 003's kubeconfig-building sequence.
func seed003(ca string) [][]string {
	return [][]string{
		{"config", "set-cluster", "k8s", "--server=https://10.0.0.1:6443", "--certificate-authority=" + ca, "--embed-certs"},
		{"config", "set-credentials", "gitlab", "--token=s3cr3t-token-value"},
		{"config", "set-context", "default", "--cluster=k8s", "--user=gitlab", "--namespace=shark"},
		{"config", "use-context", "default"},
		{"config", "set-context", "--current", "--namespace=other"},
	}
}

func runFerry(t *testing.T, kubeconfig string, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(append([]string{"--kubeconfig", kubeconfig}, args...), strings.NewReader(""), &out, &errb, engine)
	return out.String() + errb.String(), code
}

func writeCA(t *testing.T) string {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// The config verbs leave the same kubeconfig as the real kubectl does for
// the same commands, and print the same lines.
func TestConfigVerbsMatchKubectl(t *testing.T) {
	real, err := ferrybuild.ReferenceKubectl()
	if err != nil {
		t.Fatalf("the reference kubectl: %v", err)
	}
	ca := writeCA(t)
	mine := filepath.Join(t.TempDir(), "ferry.kubeconfig")
	theirs := filepath.Join(t.TempDir(), "kubectl.kubeconfig")
	for _, args := range seed003(ca) {
		got, code := runFerry(t, mine, args...)
		cmd := exec.Command(real, append([]string{"--kubeconfig", theirs}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		want, err := cmd.CombinedOutput()
		if err != nil || code != 0 {
			t.Fatalf("%v: ferry exit %d %q; kubectl %v %q", args, code, got, err, want)
		}
		if got != string(want) {
			t.Errorf("%v: ferry printed %q, kubectl %q", args, got, want)
		}
	}
	a, b := loadBoth(t, mine, theirs)
	if a.CurrentContext != b.CurrentContext || !sameContext(a.Contexts["default"], b.Contexts["default"]) ||
		!bytes.Equal(a.Clusters["k8s"].CertificateAuthorityData, b.Clusters["k8s"].CertificateAuthorityData) ||
		a.Clusters["k8s"].Server != b.Clusters["k8s"].Server || a.AuthInfos["gitlab"].Token != b.AuthInfos["gitlab"].Token {
		t.Errorf("kubeconfigs differ:\nferry:   %+v %+v %+v\nkubectl: %+v %+v %+v", a.Contexts["default"], a.Clusters["k8s"], a.AuthInfos["gitlab"],
			b.Contexts["default"], b.Clusters["k8s"], b.AuthInfos["gitlab"])
	}
	if st, err := os.Stat(mine); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v, want 0600 (%v)", st.Mode().Perm(), err)
	}
}

// loadBoth loads the kubeconfigs ferry and the real kubectl wrote.
func loadBoth(t *testing.T, mine, theirs string) (*clientcmdapi.Config, *clientcmdapi.Config) {
	t.Helper()
	a, err := clientcmd.LoadFromFile(mine)
	if err != nil {
		t.Fatal(err)
	}
	b, err := clientcmd.LoadFromFile(theirs)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// sameContext compares what a context says, not where it was loaded from.
func sameContext(a, b *clientcmdapi.Context) bool {
	return a != nil && b != nil && a.Cluster == b.Cluster && a.AuthInfo == b.AuthInfo && a.Namespace == b.Namespace
}

// seededKubeconfig is a kubeconfig written by seed 003's config sequence.
func seededKubeconfig(t *testing.T) string {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kc")
	for _, args := range seed003(writeCA(t)) {
		if out, code := runFerry(t, kc, args...); code != 0 {
			t.Fatalf("%v: %s", args, out)
		}
	}
	return kc
}

func TestConfigViewRedactsUnlessRaw(t *testing.T) {
	kc := seededKubeconfig(t)
	out, code := runFerry(t, kc, "config", "view")
	if code != 0 || strings.Contains(out, "s3cr3t-token-value") || !strings.Contains(out, "REDACTED") || !strings.Contains(out, "DATA+OMITTED") {
		t.Errorf("config view: exit %d\n%s", code, out)
	}
	out, _ = runFerry(t, kc, "config", "view", "--raw")
	if !strings.Contains(out, "s3cr3t-token-value") {
		t.Errorf("config view --raw hides the token:\n%s", out)
	}
	out, code = runFerry(t, kc, "config", "use-context", "nope")
	if code != 1 || !strings.Contains(out, `error: no context exists with the name: "nope"`) {
		t.Errorf("use-context of a missing context: exit %d %q", code, out)
	}
}

func TestArgumentErrors(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kc")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"apply"}, "error: must specify one of -f and -k"},
		{[]string{"apply", "-f", "x.yaml", "--dry-run=maybe"}, `invalid dry-run value (maybe)`},
		{[]string{"apply", "-f", "x.yaml", "-o", "wide"}, `unable to match a printer suitable for the output format "wide"`},
		{[]string{"apply", "-f", "x.yaml", "--prune"}, "all resources selected for prune without explicitly passing --all"},
		// kubectl's own code, which reads the (missing) kubeconfig first.
		{[]string{"rollout", "undo", "deploy/x"}, "error: stat " + kc + ": no such file or directory"},
		{[]string{"config", "rename-context", "a", "b"}, `error: cannot rename the context "a", it's not in ` + kc},
	} {
		out, code := runFerry(t, kc, tc.args...)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, output %q, want %q", tc.args, code, out, tc.want)
		}
	}
}

// set-cluster and set-credentials store certificate and key files the way
// the real kubectl does, embedded (--embed-certs) or as absolute paths, and
// switching between the two leaves only one of path and data set.
func TestEmbedCertsMatchesKubectl(t *testing.T) {
	real, err := ferrybuild.ReferenceKubectl()
	if err != nil {
		t.Fatalf("the reference kubectl: %v", err)
	}
	dir := t.TempDir()
	for _, f := range []string{"ca.pem", "client.crt", "client.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("contents of "+f+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(old)
	mine, theirs := filepath.Join(t.TempDir(), "ferry"), filepath.Join(t.TempDir(), "kubectl")
	for _, args := range [][]string{
		// Relative paths: both store them absolute.
		{"config", "set-cluster", "k", "--server=https://x", "--certificate-authority=ca.pem"},
		{"config", "set-credentials", "u", "--client-certificate=client.crt", "--client-key=client.key"},
		{"config", "set-cluster", "k", "--certificate-authority=ca.pem", "--embed-certs"},
		{"config", "set-credentials", "u", "--client-certificate=client.crt", "--client-key=client.key", "--embed-certs"},
		// Only the key back to a path: the certificate stays embedded.
		{"config", "set-credentials", "u", "--client-key=client.key"},
	} {
		got, code := runFerry(t, mine, args...)
		cmd := exec.Command(real, append([]string{"--kubeconfig", theirs}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		want, err := cmd.CombinedOutput()
		if err != nil || code != 0 || got != string(want) {
			t.Fatalf("%v: ferry exit %d %q; kubectl %v %q", args, code, got, err, want)
		}
		a, b := loadBoth(t, mine, theirs)
		ac, bc, au, bu := a.Clusters["k"], b.Clusters["k"], a.AuthInfos["u"], b.AuthInfos["u"]
		if (ac == nil) != (bc == nil) || ac != nil && (ac.CertificateAuthority != bc.CertificateAuthority || !bytes.Equal(ac.CertificateAuthorityData, bc.CertificateAuthorityData)) {
			t.Errorf("%v: cluster differs:\nferry:   %+v\nkubectl: %+v", args, ac, bc)
		}
		if (au == nil) != (bu == nil) || au != nil && (au.ClientCertificate != bu.ClientCertificate || au.ClientKey != bu.ClientKey ||
			!bytes.Equal(au.ClientCertificateData, bu.ClientCertificateData) || !bytes.Equal(au.ClientKeyData, bu.ClientKeyData)) {
			t.Errorf("%v: user differs:\nferry:   %+v\nkubectl: %+v", args, au, bu)
		}
	}
	final, _ := clientcmd.LoadFromFile(mine)
	if u := final.AuthInfos["u"]; u == nil || string(u.ClientCertificateData) != "contents of client.crt\n" || u.ClientKey != filepath.Join(dir, "client.key") || u.ClientKeyData != nil {
		t.Errorf("final user: %+v", final.AuthInfos["u"])
	}
}

// A missing file is an error naming it, and nothing is written. The words
// are kubectl 1.37's (the code ferry links; kubectl 1.32 said "could not
// read ... data from").
func TestEmbedCertsMissingFile(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kc")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "set-cluster", "k", "--certificate-authority=/nonexistent/ca.pem", "--embed-certs"}, "error: could not stat certificate-authority file /nonexistent/ca.pem: stat /nonexistent/ca.pem: no such file or directory"},
		{[]string{"config", "set-credentials", "u", "--client-certificate=/nonexistent/c.crt", "--embed-certs"}, "error: could not stat client-certificate file /nonexistent/c.crt: stat /nonexistent/c.crt"},
		{[]string{"config", "set-credentials", "u", "--client-key=/nonexistent/c.key", "--embed-certs"}, "error: could not stat client-key file /nonexistent/c.key: stat /nonexistent/c.key"},
	} {
		out, code := runFerry(t, kc, tc.args...)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d %q, want %q", tc.args, code, out, tc.want)
		}
		if _, err := os.Stat(kc); !os.IsNotExist(err) {
			t.Errorf("%v: kubeconfig written after an error (%v)", tc.args, err)
		}
	}
}

// config view, in every output format ferry supports and with --minify,
// --context, --raw and --flatten, prints what the real kubectl prints for
// the same kubeconfig, redaction included: a token, a password and an
// embedded client key are hidden unless --raw (or --flatten) is given,
// jsonpath too.
func TestConfigViewMatchesKubectl(t *testing.T) {
	real, err := ferrybuild.ReferenceKubectl()
	if err != nil {
		t.Fatalf("the reference kubectl: %v", err)
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("ca file contents\n"), 0o600)
	kc := filepath.Join(dir, "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
current-context: ci
clusters:
- name: prod
  cluster: {server: "https://prod.example:6443", certificate-authority-data: Y2EgZGF0YQo=}
- name: staging
  cluster: {server: "https://staging.example:6443", certificate-authority: ` + ca + `}
users:
- name: deployer
  user: {token: s3cr3t-token, client-certificate-data: Y2VydAo=, client-key-data: a2V5Cg==}
- name: basic
  user: {username: admin, password: s3cr3t-password}
contexts:
- name: ci
  context: {cluster: prod, user: deployer, namespace: shark}
- name: stage
  context: {cluster: staging, user: basic}
`
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"config", "view"},
		{"config", "view", "--raw"},
		{"config", "view", "-o", "json"},
		{"config", "view", "--raw", "-o", "json"},
		{"config", "view", "--minify"},
		{"config", "view", "--minify", "--context=stage", "-o", "json"},
		{"config", "view", "--minify", "--flatten", "--context=stage"},
		{"config", "view", "-o", "jsonpath={.current-context}"},
		{"config", "view", "-o", "jsonpath={.users[?(@.name==\"deployer\")].user.token}"},
		{"config", "view", "--raw", "-o", "jsonpath={.users[?(@.name==\"deployer\")].user.token}"},
		{"config", "view", "-o", "jsonpath={.users[*].user}"},
		{"config", "view", "--raw", "-o", "jsonpath={.users[*].user}"},
		{"config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"},
		{"config", "view", "-o", `jsonpath={range .contexts[*]}{.name}{"\t"}{.context.namespace}{"\n"}{end}`},
		{"config", "view", "-o", "jsonpath={.nothing}"},
		{"config", "view", "-o", "jsonpath=.current-context"},
		// Errors.
		{"config", "view", "-o", "jsonpath={.users[0]"},
		{"config", "view", "--minify", "--context=nope"},
	} {
		got, code := runFerry(t, kc, args...)
		cmd := exec.Command(real, append([]string{"--kubeconfig", kc}, args...)...)
		cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
		wantb, err := cmd.CombinedOutput()
		wantCode := 0
		if ee, ok := err.(*exec.ExitError); ok {
			wantCode = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		want := string(wantb)
		if code != wantCode || got != want {
			t.Errorf("%v: exit %d, kubectl %d\nferry:\n%s\nkubectl:\n%s", args, code, wantCode, got, want)
		}
		raw := slices.Contains(args, "--raw") || slices.Contains(args, "--flatten")
		for _, secret := range []string{"s3cr3t-token", "s3cr3t-password", "a2V5Cg=="} {
			if !raw && strings.Contains(got, secret) {
				t.Errorf("%v printed %q", args, secret)
			}
		}
	}
}

// -o yaml is the default, anything but yaml, json and jsonpath is refused,
// and an argument is an error rather than ignored.
func TestConfigViewOutputErrors(t *testing.T) {
	kc := seededKubeconfig(t)
	def, _ := runFerry(t, kc, "config", "view")
	yml, code := runFerry(t, kc, "config", "view", "-o", "yaml")
	if code != 0 || def != yml || !strings.Contains(yml, "token: REDACTED") {
		t.Errorf("-o yaml: exit %d\n%s\ndefault:\n%s", code, yml, def)
	}
	out, code := runFerry(t, kc, "config", "view", "-o", "wide")
	if code != 1 || !strings.Contains(out, `unable to match a printer suitable for the output format "wide"`) {
		t.Errorf("-o wide: exit %d %q", code, out)
	}
	out, code = runFerry(t, kc, "config", "view", "extra")
	if code != 1 || !strings.Contains(out, "unexpected arguments: [extra]") {
		t.Errorf("config view extra: exit %d %q", code, out)
	}
}
