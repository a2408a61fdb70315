package apply

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"gitlab.com/ferry-ci/ferry/pkg/apply/kustomize"
)

const manifests = "../../testdata/manifests"

func names(objs []*Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

func TestMultiDocListAndEmpty(t *testing.T) {
	objs, err := ReadManifests(ReadOptions{Filenames: []string{filepath.Join(manifests, "multi.yaml")}})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(names(objs), " ")
	if want := "ConfigMap/one ConfigMap/two Secret/three"; got != want {
		t.Fatalf("objects = %q, want %q", got, want)
	}
	// Line of the first content line of each document; List items share the List's.
	if objs[0].Line != 3 || objs[1].Line != 10 || objs[2].Line != 10 {
		t.Fatalf("lines = %d %d %d, want 3 10 10", objs[0].Line, objs[1].Line, objs[2].Line)
	}
	if !strings.HasSuffix(objs[0].Location(), "multi.yaml:3") {
		t.Fatalf("location = %q", objs[0].Location())
	}
}

func TestInvalidYAMLNamesFileAndLine(t *testing.T) {
	f := filepath.Join(manifests, "invalid.yaml")
	_, err := ReadManifests(ReadOptions{Filenames: []string{f}})
	if err == nil {
		t.Fatal("no error for invalid YAML")
	}
	var me *ManifestError
	if !errors.As(err, &me) {
		t.Fatalf("error %T is not a *ManifestError: %v", err, err)
	}
	// The flow sequence opened on line 10 is never closed; the YAML parser
	// reports the line where it noticed, which must be inside document 2.
	if me.Source != f || me.Line < 6 || me.Line > 11 {
		t.Fatalf("error at %s:%d, want %s line 6..11: %v", me.Source, me.Line, f, err)
	}
	if !strings.HasPrefix(err.Error(), f+":") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error is not one line starting with the file: %q", err)
	}
}

func TestYAMLErrorLineIsAbsolute(t *testing.T) {
	data := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n   bad: indent\n"
	_, err := Parse("x.yaml", []byte(data), nil)
	var me *ManifestError
	if !errors.As(err, &me) || me.Line != 10 {
		t.Fatalf("want an error at x.yaml:10, got %v", err)
	}
}

func TestJSONStream(t *testing.T) {
	data := "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"a\"},\"data\":{\"n\":\"1\"}}\n\n" +
		"{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"s\"},\"spec\":{\"ports\":[{\"port\":80}]}}]}\n"
	objs, err := Parse("x.json", []byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(objs), " "); got != "ConfigMap/a Service/s" {
		t.Fatalf("objects = %q", got)
	}
	if objs[1].Line != 3 {
		t.Fatalf("line of second JSON object = %d, want 3", objs[1].Line)
	}
	// Numbers must be int64 (unstructured's deep copy panics on float64 ints? no, but SSA wants ints).
	port := objs[1].Object["spec"].(map[string]any)["ports"].([]any)[0].(map[string]any)["port"]
	if _, ok := port.(int64); !ok {
		t.Fatalf("port decoded as %T, want int64", port)
	}
	_, err = Parse("bad.json", []byte("{\"apiVersion\":\"v1\",\n\"kind\": }\n"), nil)
	var me *ManifestError
	if !errors.As(err, &me) || me.Line != 2 {
		t.Fatalf("want bad.json:2, got %v", err)
	}
}

func TestMissingKindAndName(t *testing.T) {
	_, err := Parse("m.yaml", []byte("# c\napiVersion: v1\nmetadata: {}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "m.yaml:2: invalid object: kind not set, metadata.name not set") {
		t.Fatalf("err = %v", err)
	}
}

func TestDirectoryRecursive(t *testing.T) {
	dir := filepath.Join(manifests, "nested")
	flat, err := ReadManifests(ReadOptions{Filenames: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(flat), " "); got != "ConfigMap/nested-a" {
		t.Fatalf("without -R: %q", got)
	}
	deep, err := ReadManifests(ReadOptions{Filenames: []string{dir}, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(deep), " "); got != "ConfigMap/nested-a ConfigMap/nested-b" {
		t.Fatalf("with -R (README.txt must be skipped): %q", got)
	}
}

func TestStdin(t *testing.T) {
	objs, err := ReadManifests(ReadOptions{Filenames: []string{"-"}, Stdin: strings.NewReader("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n")})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Source != "STDIN" || objs[0].Line != 1 {
		t.Fatalf("got %v source %q", names(objs), objs[0].Source)
	}
}

func TestMissingPath(t *testing.T) {
	_, err := ReadManifests(ReadOptions{Filenames: []string{"/nonexistent/x.yaml"}})
	if err == nil || err.Error() != `the path "/nonexistent/x.yaml" does not exist` {
		t.Fatalf("err = %v", err)
	}
}

func TestKustomize(t *testing.T) {
	objs, err := ReadManifests(ReadOptions{Kustomize: []string{filepath.Join(manifests, "kustomize")}, Kustomizer: kustomize.Build})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(names(objs), " ")
	if !strings.Contains(got, "ConfigMap/kz-plain") || !strings.Contains(got, "ConfigMap/kz-generated-") {
		t.Fatalf("kustomize output = %q", got)
	}
	if objs[0].GetLabels()["app.kubernetes.io/part-of"] != "kz" {
		t.Fatalf("labels not applied: %v", objs[0].GetLabels())
	}
}

func TestEnvsubst(t *testing.T) {
	vars := map[string]string{"IMAGE": "reg/app:abc", "NS": "prod"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	src := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: ${NS}\n  annotations:\n" +
		"    script: echo $HOME ${foo[@]} $${NS}\n# ${COMMENTED_OUT}\nspec:\n  containers:\n  - name: c\n    image: ${IMAGE}\n"
	objs, err := Parse("p.yaml", []byte(src), lookup)
	if err != nil {
		t.Fatal(err)
	}
	o := objs[0]
	if o.GetNamespace() != "prod" {
		t.Fatalf("namespace = %q", o.GetNamespace())
	}
	if got := o.GetAnnotations()["script"]; got != "echo $HOME ${foo[@]} ${NS}" {
		t.Fatalf("script = %q", got)
	}
	img := o.Object["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)["image"]
	if img != "reg/app:abc" {
		t.Fatalf("image = %v", img)
	}
	_, err = Parse("p.yaml", []byte("a: b\nimage: ${MISSING}\n"), lookup)
	if err == nil || err.Error() != "p.yaml:2: variable ${MISSING} is not set" {
		t.Fatalf("err = %v", err)
	}
}
