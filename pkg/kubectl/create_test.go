package kubectl

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/ferry-ci/ferry/internal/ferrybuild"
	"gitlab.com/ferry-ci/ferry/internal/proctest"
)

// realKubectl runs the reference kubectl (ferrybuild.ReferenceKubectl) with no
// kubeconfig: client dry runs never contact a server.
func realKubectl(t *testing.T, dir string, args ...string) (string, int) {
	t.Helper()
	kc, err := ferrybuild.ReferenceKubectl()
	if err != nil {
		t.Fatalf("the reference kubectl: %v", err)
	}
	cmd := exec.Command(kc, args...)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin", "FROM_ENV=from the environment"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	code := proctest.ExitCode(t, cmd.Run())
	return out.String(), code
}

func selfSignedPair(t *testing.T, dir string) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shark.example"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, k := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return c, k
}

// The generated objects of `create ... --dry-run=client` are kubectl's,
// byte for byte (but for the null creationTimestamp), in every -o format:
// `create secret docker-registry ... -o yaml --dry-run=client | kubectl
// apply -f -` is GitLab's recipe for a registry pull secret.
func TestCreateDryRunClientMatchesKubectl(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "app.env"), []byte("\xef\xbb\xbfA=1\n# comment\n\n  B=x y \nFROM_ENV\nUNSET\n"), 0o600)
	os.Mkdir(filepath.Join(dir, "conf"), 0o700)
	os.WriteFile(filepath.Join(dir, "conf", "nginx.conf"), []byte("server {}\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "conf", "logo.bin"), []byte{0xff, 0xfe, 0}, 0o600)
	os.WriteFile(filepath.Join(dir, "ns.yaml"), []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata: {x: z}\n"), 0o600)
	crt, key := selfSignedPair(t, dir)
	t.Setenv("FROM_ENV", "from the environment")
	for _, args := range [][]string{
		{"create", "namespace", "shark"},
		{"create", "ns", "shark", "-o", "yaml"},
		{"create", "namespace", "shark", "-o", "json"},
		{"create", "namespace", "shark", "-o", "name"},
		{"create", "secret", "docker-registry", "gitlab-registry", "--docker-server=registry.gitlab.com", "--docker-username=deploy", "--docker-password=s3cret", "-o", "yaml"},
		{"create", "secret", "docker-registry", "reg", "-n", "shark", "--docker-username=u", "--docker-password=p", "--docker-email=u@example.com", "-o", "json"},
		{"create", "secret", "generic", "s", "--from-literal=a=b=c", "--from-literal=empty=", "--from-file=conf", "--from-file=renamed=app.env", "--type=Opaque", "-o", "yaml"},
		{"create", "secret", "generic", "s", "--from-env-file=app.env", "-o", "json"},
		{"create", "secret", "tls", "cert", "--cert=" + crt, "--key=" + key, "-o", "yaml"},
		{"create", "configmap", "c", "--from-file=conf", "--from-literal=k=v", "-n", "shark", "-o", "yaml"},
		{"create", "cm", "c", "--from-env-file=app.env", "-o", "json"},
		{"create", "configmap", "c", "--from-literal=k=v"},
		// Flags before the generator's name, as CI scripts often write them.
		{"create", "-n", "shark", "secret", "generic", "s", "--from-literal=a=b", "-o", "yaml"},
		{"create", "secret", "-n", "shark", "docker-registry", "reg", "--docker-username=u", "--docker-password=p", "-o", "json"},
		{"create", "-o", "name", "configmap", "c", "--from-literal=k=v"},
		// Errors: same exit code, and the same message.
		{"create", "secret", "generic", "s", "--from-literal=novalue"},
		{"create", "secret", "generic", "s", "--from-literal=a=1", "--from-literal=a=2"},
		{"create", "secret", "docker-registry", "reg", "--docker-username=u"},
		{"create", "secret", "tls", "cert", "--cert=" + crt},
		{"create", "configmap", "c", "--from-literal=bad/key=1"},
		{"create", "namespace", "shark", "-o", "wide"},
		{"create", "secret", "generic", "s", "--from-env-file=app.env", "--from-literal=a=b"},
		{"create", "configmap", "c", "--from-env-file=app.env", "--from-file=conf"},
	} {
		full := append(append([]string{}, args...), "--dry-run=client")
		var out, errb bytes.Buffer
		old, _ := os.Getwd()
		os.Chdir(dir)
		code := Main(full, strings.NewReader(""), &out, &errb, engine)
		os.Chdir(old)
		want, wantCode := realKubectl(t, dir, full...)
		got := out.String() + errb.String()
		if code != wantCode {
			t.Errorf("%v: exit %d, kubectl %d\nferry:   %s\nkubectl: %s", args, code, wantCode, got, want)
			continue
		}
		if code != 0 {
			// The first line of kubectl's error is what ferry says too.
			w := strings.SplitN(strings.TrimPrefix(want, "error: "), "\n", 2)[0]
			w, _, _ = strings.Cut(w, ", allowed formats are") // ferry prints fewer
			if !strings.Contains(got, w) {
				t.Errorf("%v: ferry says %q, kubectl %q", args, got, w)
			}
			continue
		}
		if got != want {
			t.Errorf("%v:\nferry:\n%s\nkubectl:\n%s", args, got, want)
		}
	}
}

// create -f --dry-run=client needs no server (kubectl's asks discovery for
// the kinds; ferry prints what it read), so a script can render offline.
func TestCreateFileDryRunClientOffline(t *testing.T) {
	f := filepath.Join(t.TempDir(), "objs.yaml")
	os.WriteFile(f, []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n"), 0o600)
	var out, errb bytes.Buffer
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	code := Main([]string{"create", "-f", f, "--dry-run=client"}, strings.NewReader(""), &out, &errb, engine)
	if code != 0 || out.String() != "namespace/a created (dry run)\ndeployment.apps/b created (dry run)\n" {
		t.Errorf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	code = Main([]string{"create", "-f", f, "--dry-run=client", "-o", "yaml"}, strings.NewReader(""), &out, &errb, engine)
	want := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n"
	if code != 0 || out.String() != want {
		t.Errorf("exit %d\n%s%s", code, out.String(), errb.String())
	}
}
