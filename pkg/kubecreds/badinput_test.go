package kubecreds

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// TestDetectScriptReadsFerrysFile: lines that only read the file KUBECONFIG
// names (the kubeconfig ferry wrote) are not the seed's decode line; taking
// them for one left KUBECONFIG as the raw base64 value and broke every later
// command of the job.
func TestDetectScriptReadsFerrysFile(t *testing.T) {
	reads := []string{
		`sed -n 's/^ *certificate-authority-data: *//p' "$KUBECONFIG" | base64 -d > ca.crt`,
		`grep client-key-data $KUBECONFIG | awk '{print $2}' | base64 --decode > client.key`,
		`cat "$KUBECONFIG" | base64 -d > /dev/null`,
		`base64 -d "$KUBECONFIG" > decoded`,
		`base64 -d < ${KUBECONFIG} > decoded`,
		`yq '.clusters[0].cluster.certificate-authority-data' $KUBECONFIG | base64 -d > ca.pem`,
		// The decoded value goes nowhere: no kubeconfig is made from it.
		`echo $KUBECONFIG | base64 -d | grep -q server`,
		`SERVER=$(echo "$KUBECONFIG" | base64 -d | grep server)`,
	}
	for _, line := range reads {
		for _, fileB64 := range []bool{false, true} {
			u := detectScript([]string{line, "kubectl get pods"}, "KUBECONFIG", fileB64)
			// Only the whole file piped as is into base64 -d, and written
			// somewhere, decodes a File variable of base64.
			want := fileB64 && strings.Contains(line, "decoded")
			if u.Decodes != want {
				t.Errorf("%q (File variable of base64: %v): Decodes=%v, want %v", line, fileB64, u.Decodes, want)
			}
		}
	}
	// The seed's own forms still count, File variable or not.
	for _, line := range []string{
		`echo $KUBECONFIG | base64 --decode > kubeconfig`,
		`echo "$KUBECONFIG" > kc.b64; base64 -d kc.b64 > kubeconfig`,
		`KC=x printf '%s' "${KUBECONFIG}" | base64 -d > kubeconfig`,
		`base64 -d <<< "$KUBECONFIG" > kubeconfig`,
	} {
		for _, fileB64 := range []bool{false, true} {
			if u := detectScript([]string{line}, "KUBECONFIG", fileB64); !u.Decodes {
				t.Errorf("%q (File variable of base64: %v): not detected", line, fileB64)
			}
		}
	}
}

// TestLoadFileVariableDecode: a File KUBECONFIG holding base64 is decoded by
// `cat "$KUBECONFIG" | base64 -d > kubeconfig` (the file held base64 before
// ferry), one holding YAML is not (the line reads ferry's kubeconfig).
func TestLoadFileVariableDecode(t *testing.T) {
	yaml := readKubeconfig(t, "sa-token.yaml")
	line := `cat "$KUBECONFIG" | base64 -d > kubeconfig`
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{base64.StdEncoding.EncodeToString([]byte(yaml)), true},
		{yaml, false},
	} {
		c, err := Load(Input{Vars: map[string]string{"KUBECONFIG": tc.value}, FileVars: map[string]bool{"KUBECONFIG": true}, Scripts: []string{line}}, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		if c.Script.Decodes != tc.want {
			t.Errorf("%s: Decodes=%v, want %v", c.Source, c.Script.Decodes, tc.want)
		}
		// Not a File variable: the same line reads ferry's file.
		c, err = Load(Input{Vars: map[string]string{"KUBECONFIG": tc.value}, Scripts: []string{line}}, DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		if c.Script.Decodes {
			t.Errorf("%s: a plain variable's file is ferry's kubeconfig, not a decode", c.Source)
		}
	}
}

// TestSetupKeepsKubeconfigForReadingLine is the case through Setup:
// KUBECONFIG points at ferry's file although the script reads it with sed.
func TestSetupKeepsKubeconfigForReadingLine(t *testing.T) {
	st := &dirState{dir: t.TempDir(), env: map[string]string{}}
	var log textLog
	v := base64.StdEncoding.EncodeToString([]byte(unreachable(t)))
	in := Input{Vars: map[string]string{"KUBECONFIG": v}, Scripts: []string{
		`sed -n 's/^ *server: *//p' "$KUBECONFIG" | base64 -d > server.txt`, "kubectl get pods"}}
	opt := DefaultOptions()
	opt.PreflightTimeout = 200e6
	_ = Setup(context.Background(), in, opt, st, &log, "/b/p")
	if st.env["KUBECONFIG"] != st.Path(jobstate.KubeconfigFile) {
		t.Fatalf("KUBECONFIG override %q, want ferry's file; log:\n%s", st.env["KUBECONFIG"], log.String())
	}
	if strings.Contains(log.String(), "decodes KUBECONFIG itself") {
		t.Errorf("log says the script decodes:\n%s", log.String())
	}
}

// TestManyContextsErrorStaysReadable: 1000 contexts and no current context
// gave a 23,000-character line; now a few names and how many more.
func TestManyContextsErrorStaysReadable(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\nusers:\n- name: u\n  user:\n    token: x\ncontexts:\n")
	for i := range 1000 {
		fmt.Fprintf(&b, "- name: group/agents:agent-%04d\n  context:\n    cluster: c\n    user: u\n", i)
	}
	_, err := load(t, map[string]string{"KUBECONFIG": b.String()}, DefaultOptions())
	wantBuildError(t, err, "KUBECONFIG", "no current-context", "KUBE_CONTEXT", "1000 contexts",
		"group/agents:agent-0000, group/agents:agent-0001", "and 995 more", "kubectl config get-contexts")
	if msg := err.Error(); len(msg) > 400 || strings.Contains(msg, "\n") || strings.Contains(msg, "agent-0999") {
		t.Errorf("error of %d characters: %s", len(msg), msg)
	}
	_, err = load(t, map[string]string{"KUBECONFIG": b.String(), "KUBE_CONTEXT": "nope"}, DefaultOptions())
	wantBuildError(t, err, "KUBE_CONTEXT", `"nope"`, "and 995 more")
	if len(err.Error()) > 400 {
		t.Errorf("KUBE_CONTEXT error of %d characters", len(err.Error()))
	}
}

// TestSetupEmptyKubeconfigSaysSo: an empty or blank KUBECONFIG is named once
// in prepare instead of surfacing as kubectl's KUBERNETES_MASTER error.
func TestSetupEmptyKubeconfigSaysSo(t *testing.T) {
	for _, tc := range []struct {
		value string
		file  bool
		want  string
	}{
		{"", false, "ferry: KUBECONFIG: the variable is empty, so this job gets no Kubernetes credentials"},
		{"  \n\t", false, "ferry: KUBECONFIG: the variable is only white space"},
		{"\n", true, "ferry: KUBECONFIG: the File variable is only white space"},
	} {
		st := &dirState{dir: t.TempDir(), env: map[string]string{}}
		var log textLog
		in := Input{Vars: map[string]string{"KUBECONFIG": tc.value}, FileVars: map[string]bool{"KUBECONFIG": tc.file}}
		if err := Setup(context.Background(), in, DefaultOptions(), st, &log, "/b/p"); err != nil {
			t.Fatal(err)
		}
		if got := log.String(); strings.Count(got, "KUBECONFIG") != 1 || !strings.Contains(got, "WARN "+tc.want) || strings.Count(got, "\n") != 1 {
			t.Errorf("%q: log %q, want one line with %q", tc.value, got, tc.want)
		}
		if len(st.env) != 0 {
			t.Errorf("%q: env %v", tc.value, st.env)
		}
	}
	// With KUBE_URL/KUBE_TOKEN as well, the line says what is used instead.
	st := &dirState{dir: t.TempDir(), env: map[string]string{}}
	var log textLog
	opt := DefaultOptions()
	opt.PreflightTimeout = 200e6
	in := Input{Vars: map[string]string{"KUBECONFIG": " ", "KUBE_URL": "https://127.0.0.1:1", "KUBE_TOKEN": "tok-12345678"}}
	_ = Setup(context.Background(), in, opt, st, &log, "/b/p")
	if !strings.Contains(log.String(), "WARN ferry: KUBECONFIG: the variable is only white space; using KUBE_URL/KUBE_TOKEN instead") {
		t.Errorf("log %q", log.String())
	}
	// Unset: nothing said.
	log = textLog{}
	if err := Setup(context.Background(), Input{Vars: map[string]string{}}, DefaultOptions(), st, &log, "/b/p"); err != nil || log.Len() != 0 {
		t.Errorf("unset KUBECONFIG: err %v, log %q", err, log.String())
	}
}
