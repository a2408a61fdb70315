// Command glshim is the `gitlab-runner` executable the runner driver puts on
// the job's PATH. It implements the two subcommands stage scripts call,
// `artifacts-uploader` and `artifacts-downloader`, playing GitLab's side with
// a local store instead of the GitLab API.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gitlab.com/ferry-ci/ferry/internal/runnerdriver/internal/gitlabdotenv"
)

// Config is written by the driver next to the shim.
type Config struct {
	Store        string `json:"store"`
	GitLabDotenv bool   `json:"gitlab_dotenv"`
	MaxVariables int    `json:"max_variables"`
	Version      string `json:"version"`
}

// Meta records one upload next to its files.
type Meta struct {
	Type   string   `json:"type"`
	Format string   `json:"format"`
	Paths  []string `json:"paths"`
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var cfg Config
	if len(args) >= 2 && args[0] == "--ferry-driver-config" {
		b, err := os.ReadFile(args[1])
		if err == nil {
			err = json.Unmarshal(b, &cfg)
		}
		if err != nil {
			fmt.Fprintf(stderr, "FATAL: driver config: %v\n", err)
			return 1
		}
		args = args[2:]
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, "FATAL: no command")
		return 1
	}
	switch args[0] {
	case "--version", "-v", "version":
		fmt.Fprintf(stdout, "Version:      %s\nGit revision: ferrydrv\n", cfg.Version)
		return 0
	case "artifacts-uploader":
		return upload(cfg, args[1:], stdout, stderr)
	case "artifacts-downloader":
		return download(cfg, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "FATAL: command %q is not emulated by the ferry runner driver\n", args[0])
	return 1
}

func short(token string) string {
	if len(token) > 8 {
		return token[:8]
	}
	return token
}

func upload(cfg Config, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("artifacts-uploader", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var paths, excludes multi
	url := fs.String("url", "", "")
	token := fs.String("token", "", "")
	id := fs.Int("id", 0, "")
	typ := fs.String("artifact-type", "archive", "")
	format := fs.String("artifact-format", "zip", "")
	fs.String("name", "", "")
	fs.String("expire-in", "", "")
	fs.Bool("untracked", false, "")
	fs.String("when", "", "")
	fs.Var(&paths, "path", "")
	fs.Var(&excludes, "exclude", "")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	if *id == 0 || *token == "" || *url == "" {
		fmt.Fprintln(stderr, "FATAL: missing --url, --token or --id")
		return 1
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(stderr, "FATAL: %v\n", err)
		return 1
	}
	var files []string
	for _, p := range paths {
		matches, _ := filepath.Glob(filepath.Join(wd, p))
		var found []string
		for _, m := range matches {
			rel, err := filepath.Rel(wd, m)
			if err != nil || strings.HasPrefix(rel, "..") {
				fmt.Fprintf(stderr, "WARNING: %s: artifact path is not a subpath of project directory: %s\n", p, wd)
				continue
			}
			found = append(found, rel)
		}
		if len(found) == 0 {
			fmt.Fprintf(stderr, "WARNING: %s: no matching files. Ensure that the artifact path is relative to the working directory (%s)\n", p, wd)
			continue
		}
		fmt.Fprintf(stdout, "%s: found %d matching artifact files and directories\n", p, len(found))
		files = append(files, found...)
	}
	if len(files) == 0 {
		fmt.Fprintln(stderr, "ERROR: No files to upload")
		return 0
	}
	jobDir := filepath.Join(cfg.Store, fmt.Sprint(*id))
	dest := filepath.Join(jobDir, *typ)
	status := fmt.Sprintf("id=%d responseStatus=%%s token=%s", *id, short(*token))
	if *typ == "dotenv" && cfg.GitLabDotenv {
		var all []gitlabdotenv.Var
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(wd, f))
			if err == nil {
				var vars []gitlabdotenv.Var
				vars, err = gitlabdotenv.Parse(b, cfg.MaxVariables)
				all = append(all, vars...)
			}
			if err != nil {
				// GitLab answers 400; the runner retries, then gives up.
				for i := 0; i < 3; i++ {
					fmt.Fprintf(stderr, "WARNING: Uploading artifacts as %q to coordinator... POST %s/api/v4/jobs/%d/artifacts: 400 Bad Request (Invalid Format)  %s\n",
						*typ, *url, *id, fmt.Sprintf(status, "400 Bad Request"))
				}
				fmt.Fprintln(stderr, "FATAL: invalid argument")
				return 1
			}
		}
		if err := os.MkdirAll(jobDir, 0o755); err == nil {
			b, _ := json.Marshal(all)
			_ = os.WriteFile(filepath.Join(jobDir, "dotenv-variables.json"), b, 0o644)
		}
	}
	for _, f := range files {
		if err := copyPath(filepath.Join(wd, f), filepath.Join(dest, f)); err != nil {
			fmt.Fprintf(stderr, "FATAL: storing %s: %v\n", f, err)
			return 1
		}
	}
	meta, _ := json.Marshal(Meta{Type: *typ, Format: *format, Paths: paths})
	if err := os.WriteFile(filepath.Join(jobDir, *typ+".json"), meta, 0o644); err != nil {
		fmt.Fprintf(stderr, "FATAL: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Uploading artifacts as %q to coordinator... 201 Created  %s\n", *typ, fmt.Sprintf(status, "201 Created"))
	return 0
}

func download(cfg Config, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("artifacts-downloader", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("url", "", "")
	token := fs.String("token", "", "")
	id := fs.Int("id", 0, "")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	src := filepath.Join(cfg.Store, fmt.Sprint(*id), "archive")
	if _, err := os.Stat(src); err != nil {
		fmt.Fprintf(stderr, "ERROR: Downloading artifacts from coordinator... not found  id=%d responseStatus=404 Not Found token=%s\n", *id, short(*token))
		return 1
	}
	wd, err := os.Getwd()
	if err == nil {
		err = copyPath(src, wd)
	}
	if err != nil {
		fmt.Fprintf(stderr, "FATAL: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "Downloading artifacts from coordinator... ok  id=%d responseStatus=200 OK token=%s\n", *id, short(*token))
	return 0
}

// copyPath copies a file or a directory tree.
func copyPath(src, dst string) error {
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return copyFile(src, dst, info.Mode().Perm())
	}
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		t := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(t, 0o755)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		i, err := e.Info()
		if err != nil {
			return err
		}
		return copyFile(p, t, i.Mode().Perm())
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}
