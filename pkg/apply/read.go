package apply

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// ReadOptions says where manifests come from (kubectl's -f, -R, -k).
type ReadOptions struct {
	// Filenames are files, directories or "-" for Stdin (kubectl -f).
	Filenames []string
	// Recursive descends into subdirectories of directories (kubectl -R).
	Recursive bool
	// Kustomize are kustomization directories (kubectl -k), built by
	// Kustomizer (pkg/apply/kustomize.Build: krusty, kubectl's own).
	Kustomize  []string
	Kustomizer func(dir string) ([]byte, error)
	// Stdin is read for "-".
	Stdin io.Reader
	// Envsubst, when set, replaces ${NAME} in every manifest before parsing
	// (see substitute); an unset variable is an error.
	Envsubst func(name string) (string, bool)
}

// ManifestError is a problem in a manifest at a file and line. Its Error() is
// "<file>:<line>: <message>"; the CLI prefixes "error: ".
type ManifestError struct {
	Source string
	Line   int
	Msg    string
}

func (e *ManifestError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.Source, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Source, e.Msg)
}

// manifestExts are the extensions picked up from directories, as kubectl.
var manifestExts = map[string]bool{".yaml": true, ".yml": true, ".json": true}

// ReadManifests reads every object named by opts, in order: Filenames (each
// directory in lexical order), then Kustomize. Empty documents are skipped
// and List kinds are expanded into their items. Problems in several
// documents are all returned (errors.Join of *ManifestError), one per line.
func ReadManifests(opts ReadOptions) ([]*Object, error) {
	var objs []*Object
	var errs []error
	add := func(source string, data []byte) {
		o, err := Parse(source, data, opts.Envsubst)
		objs = append(objs, o...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range opts.Filenames {
		if name == "-" {
			if opts.Stdin == nil {
				errs = append(errs, errors.New("no standard input to read from"))
				continue
			}
			data, err := io.ReadAll(opts.Stdin)
			if err != nil {
				errs = append(errs, fmt.Errorf("reading standard input: %w", err))
				continue
			}
			add("STDIN", data)
			continue
		}
		if isURL(name) {
			data, err := readURL(name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			add(name, data)
			continue
		}
		files, err := expand(name, opts.Recursive)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("reading %s: %w", f, err))
				continue
			}
			add(f, data)
		}
	}
	for _, dir := range opts.Kustomize {
		if opts.Kustomizer == nil {
			errs = append(errs, fmt.Errorf("kustomize %s: no kustomize in this build", dir))
			continue
		}
		data, err := opts.Kustomizer(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		add(dir, data)
	}
	if len(objs) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no objects passed to apply"))
	}
	return objs, errors.Join(errs...)
}

// isURL is kubectl's test for a -f argument to fetch rather than open.
func isURL(name string) bool {
	return strings.HasPrefix(name, "http://") || strings.HasPrefix(name, "https://")
}

// urlClient fetches -f URLs: the environment's proxy, and a bound on the
// whole request so a stalled server cannot hang the job.
var urlClient = &http.Client{Timeout: 60 * time.Second}

// readURL fetches a manifest as kubectl does: a GET, retried up to 3 times
// on a 5xx answer, any other non-200 answer an error naming the URL.
func readURL(u string) ([]byte, error) {
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * time.Second)
		}
		resp, err := urlClient.Get(u)
		if err != nil {
			return nil, fmt.Errorf("unable to read URL %q: %w", u, err)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxURLBytes+1))
		resp.Body.Close()
		switch {
		case err != nil:
			return nil, fmt.Errorf("unable to read URL %q: %w", u, err)
		case resp.StatusCode == http.StatusOK:
			if len(data) > maxURLBytes {
				return nil, fmt.Errorf("unable to read URL %q: more than %d MiB", u, maxURLBytes>>20)
			}
			return data, nil
		}
		last = fmt.Errorf("unable to read URL %q, server reported %s, status code=%d", u, resp.Status, resp.StatusCode)
		if resp.StatusCode < 500 {
			break
		}
	}
	return nil, last
}

// maxURLBytes bounds a fetched manifest (the largest CRD bundles are a few MiB).
const maxURLBytes = 64 << 20

// expand turns a -f argument into the files to read: the file itself (any
// extension, as kubectl), or the .yaml/.yml/.json files of a directory.
func expand(name string, recursive bool) ([]string, error) {
	st, err := os.Stat(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("the path %q does not exist", name)
		}
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if !st.IsDir() {
		return []string{name}, nil
	}
	var files []string
	err = filepath.WalkDir(name, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != name && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		if manifestExts[strings.ToLower(filepath.Ext(p))] {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading directory %s: %w", name, err)
	}
	return files, nil
}

// Parse reads the objects of one manifest: a YAML stream of documents
// separated by "---" lines, or a stream of JSON objects. source names it in
// errors and in each Object.
func Parse(source string, data []byte, envsubst func(string) (string, bool)) ([]*Object, error) {
	data, err := substitute(data, source, envsubst)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		return parseJSONStream(source, data)
	}
	var objs []*Object
	var errs []error
	for _, d := range splitYAML(data) {
		o, err := parseDoc(source, d)
		objs = append(objs, o...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return objs, errors.Join(errs...)
}

type yamlDoc struct {
	data  []byte
	start int // line of the document's first line (after the separator)
	first int // line of its first content line
}

// splitYAML splits a YAML stream on separator lines: "---" followed by
// nothing but blanks or a comment, the rule of apimachinery's YAMLReader
// (what kubectl uses), while counting lines so errors can name them.
func splitYAML(data []byte) []yamlDoc {
	var docs []yamlDoc
	cur := yamlDoc{start: 1}
	var buf bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	line := 0
	flush := func(next int) {
		cur.data = append([]byte(nil), buf.Bytes()...)
		docs = append(docs, cur)
		buf.Reset()
		cur = yamlDoc{start: next}
	}
	for sc.Scan() {
		line++
		l := sc.Bytes()
		if bytes.HasPrefix(l, []byte("---")) {
			rest := strings.TrimSpace(string(l[3:]))
			if rest == "" || rest[0] == '#' {
				flush(line + 1)
				continue
			}
		}
		if cur.first == 0 {
			if t := strings.TrimSpace(string(l)); t != "" && t[0] != '#' {
				cur.first = line
			}
		}
		buf.Write(l)
		buf.WriteByte('\n')
	}
	flush(line + 1)
	return docs
}

var yamlLineRE = regexp.MustCompile(`line (\d+): `)

// parseDoc parses one YAML document. Errors name the absolute line: the
// YAML library counts from the document's start, so its "line N" is moved.
func parseDoc(source string, d yamlDoc) ([]*Object, error) {
	if d.first == 0 {
		return nil, nil // empty or comments only
	}
	j, err := yaml.YAMLToJSON(d.data)
	if err != nil {
		msg := err.Error()
		msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
		line := d.first
		if m := yamlLineRE.FindStringSubmatchIndex(msg); m != nil {
			n, _ := strconv.Atoi(msg[m[2]:m[3]])
			line = d.start + n - 1
			msg = msg[:m[0]] + msg[m[1]:]
		}
		return nil, &ManifestError{Source: source, Line: line, Msg: msg}
	}
	return decodeObject(source, d.first, j)
}

// parseJSONStream reads one or more JSON objects (kubectl accepts a JSON
// stream in one file).
func parseJSONStream(source string, data []byte) ([]*Object, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var objs []*Object
	for {
		var raw json.RawMessage
		off := skipSpace(data, int(dec.InputOffset()))
		err := dec.Decode(&raw)
		if err == io.EOF {
			return objs, nil
		}
		if err != nil {
			pos := off
			var se *json.SyntaxError
			if errors.As(err, &se) {
				pos = int(se.Offset)
			}
			return objs, &ManifestError{Source: source, Line: lineAt(data, pos), Msg: "invalid JSON: " + err.Error()}
		}
		o, err := decodeObject(source, lineAt(data, off), raw)
		objs = append(objs, o...)
		if err != nil {
			return objs, err
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n') {
		i++
	}
	return i
}

func lineAt(data []byte, off int) int {
	if off > len(data) {
		off = len(data)
	}
	return bytes.Count(data[:off], []byte("\n")) + 1
}

// decodeObject turns one document's JSON into objects, expanding Lists.
func decodeObject(source string, line int, j []byte) ([]*Object, error) {
	if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		return nil, nil
	}
	var v any
	if err := utiljson.Unmarshal(j, &v); err != nil {
		return nil, &ManifestError{Source: source, Line: line, Msg: err.Error()}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &ManifestError{Source: source, Line: line, Msg: fmt.Sprintf("expected a Kubernetes object (a mapping), got %T", v)}
	}
	return expandObject(source, line, m)
}

func expandObject(source string, line int, m map[string]any) ([]*Object, error) {
	u := &unstructured.Unstructured{Object: m}
	if items, ok := m["items"].([]any); ok && strings.HasSuffix(u.GetKind(), "List") {
		var objs []*Object
		var errs []error
		for i, it := range items {
			im, ok := it.(map[string]any)
			if !ok {
				errs = append(errs, &ManifestError{Source: source, Line: line, Msg: fmt.Sprintf("%s item %d is not an object", u.GetKind(), i)})
				continue
			}
			o, err := expandObject(source, line, im)
			objs = append(objs, o...)
			if err != nil {
				errs = append(errs, err)
			}
		}
		return objs, errors.Join(errs...)
	}
	var missing []string
	if u.GetAPIVersion() == "" {
		missing = append(missing, "apiVersion not set")
	}
	if u.GetKind() == "" {
		missing = append(missing, "kind not set")
	}
	if u.GetName() == "" {
		missing = append(missing, "metadata.name not set")
	}
	if len(missing) > 0 {
		return nil, &ManifestError{Source: source, Line: line, Msg: "invalid object: " + strings.Join(missing, ", ")}
	}
	return []*Object{{Unstructured: u, Source: source, Line: line}}, nil
}
