package dotenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/joho/godotenv"
)

func parseOK(t *testing.T, in string, opt Options) *Report {
	t.Helper()
	r, err := Parse("docker.env", []byte(in), opt)
	if err != nil {
		t.Fatalf("Parse(%q): %v", in, err)
	}
	return r
}

func TestParseValues(t *testing.T) {
	cases := []struct {
		name, in string
		want     []Var
	}{
		{"simple", "IMAGE=registry/app:1\n", []Var{{"IMAGE", "registry/app:1", 1}}},
		{"no final newline", "A=1", []Var{{"A", "1", 1}}},
		{"spaces trimmed both sides", "  A  =  x y  \n", []Var{{"A", "x y", 1}}},
		{"inner spaces kept", "MSG=hello big world", []Var{{"MSG", "hello big world", 1}}},
		{"split at first =", "URL=a=b==c", []Var{{"URL", "a=b==c", 1}}},
		{"double quotes kept", `Q="a b"`, []Var{{"Q", `"a b"`, 1}}},
		{"single quotes kept", `Q='a'`, []Var{{"Q", `'a'`, 1}}},
		{"no escapes", `E=a\nb\"`, []Var{{"E", `a\nb\"`, 1}}},
		{"no expansion", `D=${HOME}$PATH`, []Var{{"D", `${HOME}$PATH`, 1}}},
		{"hash in value", `C=a # not a comment`, []Var{{"C", "a # not a comment", 1}}},
		{"empty value", "E=\n", []Var{{"E", "", 1}}},
		{"unicode", "U=héllo ✓ 日本", []Var{{"U", "héllo ✓ 日本", 1}}},
		{"non-ASCII space kept (Ruby strip is ASCII only)", "U=\u00a0x\u00a0", []Var{{"U", "\u00a0x\u00a0", 1}}},
		{"BOM stripped", "\ufeffA=1\nB=2", []Var{{"A", "1", 1}, {"B", "2", 2}}},
		{"CRLF", "A=1\r\nB=2\r\n", []Var{{"A", "1", 1}, {"B", "2", 2}}},
		{"duplicate: last wins at first position", "A=1\nB=2\nA=3", []Var{{"A", "3", 3}, {"B", "2", 2}}},
		{"digits and underscore keys", "_1=a\n9x=b", []Var{{"_1", "a", 1}, {"9x", "b", 2}}},
		{"empty file", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := parseOK(t, tc.in, Options{})
			if !reflect.DeepEqual(r.Vars, tc.want) {
				t.Fatalf("got %+v, want %+v", r.Vars, tc.want)
			}
		})
	}
}

func TestParseDuplicateWarns(t *testing.T) {
	r := parseOK(t, "A=secret1\nA=secret2\n", Options{})
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "docker.env:2: A defined again (first on line 1)") {
		t.Fatalf("warnings: %q", r.Warnings)
	}
	if strings.Contains(r.Warnings[0], "secret") {
		t.Fatalf("a warning shows a value: %q", r.Warnings[0])
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{"A=1\n\nB=2", "docker.env:2: blank line: GitLab rejects dotenv files with blank lines"},
		{"A=1\nB=2\n\n", "docker.env:3: blank line: GitLab rejects dotenv files with blank lines"},
		{"\n", "docker.env:1: blank line"},
		{"A=1\n   \t\n", "docker.env:2: blank line"},
		{"# image\nA=1", "docker.env:1: comment line: GitLab rejects dotenv files with comments"},
		{"A=1\n  #A=2", "docker.env:2: comment line"},
		{"A=1\nB", "docker.env:2: no '=': every line must be KEY=VALUE"},
		{"=x", "docker.env:1: empty key"},
		{"export A=1", "docker.env:1: invalid key \"export A\": GitLab does not accept `export`; write A=..."},
		{"A-B=1", `docker.env:1: invalid key "A-B"`},
		{"A.B=1", `docker.env:1: invalid key "A.B"`},
		{"é=1", `docker.env:1: invalid key "é"`},
		{strings.Repeat("K", 256) + "=1", "docker.env:1: key of 256 characters: GitLab allows at most 255"},
		{"A=\xff", "docker.env:1: invalid UTF-8"},
		{"A=1\nB=a\x00b", "docker.env:2: B: value holds a NUL byte"},
		{`A="multi` + "\nline\"", "docker.env:2: no '='"},
	}
	for _, tc := range cases {
		_, err := Parse("docker.env", []byte(tc.in), Options{})
		var pe *Error
		if !errors.As(err, &pe) {
			t.Fatalf("Parse(%q): err %v, want *Error", tc.in, err)
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Parse(%q):\n got %q\nwant %q...", tc.in, err, tc.want)
		}
	}
	// A key of exactly 255 characters is fine.
	parseOK(t, strings.Repeat("K", 255)+"=1", Options{})
}

func TestParseLenient(t *testing.T) {
	in := "# built by kaniko\n\nIMAGE=x\n  \n  # more\nTAG=1 # kept\n"
	r := parseOK(t, in, Options{Lenient: true})
	want := []Var{{"IMAGE", "x", 3}, {"TAG", "1 # kept", 6}}
	if !reflect.DeepEqual(r.Vars, want) {
		t.Fatalf("got %+v want %+v", r.Vars, want)
	}
	// Lenient changes nothing else.
	if _, err := Parse("x.env", []byte("export A=1"), Options{Lenient: true}); err == nil {
		t.Fatal("lenient mode accepted export")
	}
}

func TestParseLimitsWarnButPass(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 21; i++ {
		fmt.Fprintf(&b, "V%d=%d\n", i, i)
	}
	r := parseOK(t, b.String(), Options{})
	if len(r.Vars) != 21 || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "docker.env: 21 variables: GitLab would refuse this report (limit 20)") {
		t.Fatalf("vars %d warnings %q", len(r.Vars), r.Warnings)
	}
	r = parseOK(t, strings.Repeat("V=1\n", 5), Options{}) // 20 bytes, 1 variable
	if len(r.Warnings) != 4 {
		t.Fatalf("duplicates: %q", r.Warnings)
	}
	// Exactly 20 variables and 5120 bytes: no limit warning.
	b.Reset()
	for i := 0; i < 19; i++ {
		fmt.Fprintf(&b, "V%02d=x\n", i)
	}
	last := 5120 - b.Len() - len("LAST=") - 1
	b.WriteString("LAST=" + strings.Repeat("y", last) + "\n")
	if b.Len() != 5120 {
		t.Fatalf("len %d", b.Len())
	}
	if r := parseOK(t, b.String(), Options{}); len(r.Warnings) != 0 {
		t.Fatalf("at the limits: %q", r.Warnings)
	}
	r = parseOK(t, b.String()+"Z=1", Options{})
	if len(r.Warnings) != 2 || !strings.Contains(r.Warnings[0], "5123 bytes: GitLab would refuse this report (limit 5120 bytes)") {
		t.Fatalf("over: %q", r.Warnings)
	}
	// Custom limits (GitLab.com plans).
	if r := parseOK(t, strings.Repeat("A=1\n", 1)+"B=2\nC=3", Options{MaxVariables: 2}); len(r.Warnings) != 1 {
		t.Fatalf("custom limit: %q", r.Warnings)
	}
}

func TestTestdataFiles(t *testing.T) {
	files, err := filepath.Glob("../../testdata/dotenv/*.env")
	if err != nil || len(files) == 0 {
		t.Fatalf("testdata: %v %v", files, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, perr := Parse(filepath.Base(f), b, Options{})
		valid := strings.HasPrefix(filepath.Base(f), "valid") || strings.HasPrefix(filepath.Base(f), "seed")
		if valid != (perr == nil) {
			t.Errorf("%s: err %v", f, perr)
		}
	}
	b, _ := os.ReadFile("../../testdata/dotenv/valid-mixed.env")
	r, _ := Parse("valid-mixed.env", b, Options{})
	m := r.Map()
	if m["GREETING"] != "hello world" || m["QUOTED"] != `"kept as is"` || m["URL"] != "https://x.example/?a=b&c=d" ||
		m["EMPTY"] != "" || m["UNICODE"] != "hé ✓" || m["DOLLAR"] != "$HOME" || m["A"] != "2" {
		t.Fatalf("valid-mixed: %q", m)
	}
}

// plainLine is a line on which GitLab and godotenv v1.5.1 agree: no quotes,
// comments, escapes, expansion or `export`.
var plainLine = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_./:@%+,-]*$`)

// TestGodotenvAgreesOnPlainFiles cross-checks the parser against godotenv
// where both must agree.
func TestGodotenvAgreesOnPlainFiles(t *testing.T) {
	for _, in := range []string{
		"IMAGE=registry.example.com/group/app:90eedc04\nTAG=v1.2.3\n",
		"A=1\nB=x,y\nC=user@host:/p%20\n",
		"A=1\nA=2\n",
	} {
		crossCheck(t, in)
	}
}

func crossCheck(t *testing.T, in string) {
	t.Helper()
	r, err := Parse("x.env", []byte(in), Options{})
	if err != nil {
		t.Fatalf("Parse(%q): %v", in, err)
	}
	g, err := godotenv.Unmarshal(in)
	if err != nil {
		t.Fatalf("godotenv(%q): %v", in, err)
	}
	if !reflect.DeepEqual(r.Map(), g) && !(len(g) == 0 && len(r.Vars) == 0) {
		t.Fatalf("%q: ferry %q godotenv %q", in, r.Map(), g)
	}
}

func TestFormatRoundTrip(t *testing.T) {
	vars := []Var{{Key: "A", Value: `"q" = x`}, {Key: "B", Value: ""}, {Key: "C", Value: "ü"}}
	b, err := Format(vars)
	if err != nil {
		t.Fatal(err)
	}
	r := parseOK(t, string(b), Options{})
	for i := range r.Vars {
		r.Vars[i].Line = 0
	}
	if !reflect.DeepEqual(r.Vars, vars) {
		t.Fatalf("%+v", r.Vars)
	}
	if _, err := Format([]Var{{Key: "A", Value: " x"}}); err == nil {
		t.Fatal("Format accepted a value that loses its space")
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/dotenv/*.env")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b, false)
			f.Add(b, true)
		}
	}
	f.Add([]byte("A=1\nB=2=3\n"), false)
	f.Add([]byte("\ufeff  K = v \r\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, lenient bool) {
		r, err := Parse("f.env", data, Options{Lenient: lenient})
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.File != "f.env" || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not one line naming the file", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, v := range r.Vars {
			if !ValidKey(v.Key) || seen[v.Key] {
				t.Fatalf("key %q invalid or repeated", v.Key)
			}
			seen[v.Key] = true
			if !utf8.ValidString(v.Value) || strings.ContainsAny(v.Value, "\n\x00") || rubyStrip(v.Value) != v.Value {
				t.Fatalf("value %q of %s", v.Value, v.Key)
			}
			if v.Line < 1 {
				t.Fatalf("line %d", v.Line)
			}
		}
		// What Parse returns, written strictly, parses back to itself.
		b, err := Format(r.Vars)
		if err != nil {
			t.Fatalf("Format: %v", err)
		}
		r2, err := Parse("g.env", b, Options{})
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !reflect.DeepEqual(r.Map(), r2.Map()) {
			t.Fatalf("round trip: %q vs %q", r.Map(), r2.Map())
		}
		// On plain strict files godotenv must agree.
		if !lenient && len(data) > 0 {
			plain := true
			for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
				plain = plain && plainLine.MatchString(l)
			}
			if plain {
				crossCheck(t, string(data))
			}
		}
	})
}
