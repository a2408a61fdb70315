// Package clientconfig makes a job's private Docker client configuration
// (DOCKER_CONFIG) from the runner user's, so that what a job does to
// Docker's client state (docker login, docker context use, contexts it
// creates) stays in the job, and contexts the admin made by hand keep
// working inside it without their SSH key entering the job: every ssh://
// context is rewritten to a unix socket of ferry's connection holder.
package clientconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Context is an ssh:// context of the runner user, rewritten for the job.
type Context struct {
	Name   string
	URL    string // its ssh:// host
	Socket string // the unix socket it now points at
}

// Result is what Build made.
type Result struct {
	Dir            string    // the job's DOCKER_CONFIG
	CurrentContext string    // kept from the runner user's config
	SSHContexts    []Context // rewritten to sockets
	DroppedAuths   int       // runner-user logins not copied into the job
	PluginsDir     string    // the runner user's cli-plugins dir, listed in cliPluginsExtraDirs ("" if none)
}

// Build creates dir (0700) with a config.json and contexts copied from
// from (the runner user's DOCKER_CONFIG, usually ~/.docker; may not exist;
// "" for an empty configuration).
// Logins (auths, credsStore, credHelpers) are not copied: a job logs in
// itself, and the runner user's logins are not every project's.
// socketFor names the socket for a context (by its meta directory hash).
func Build(from, dir string, socketFor func(hash string) string) (*Result, error) {
	res := &Result{Dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ferry: docker config: %w", err)
	}
	cfg := map[string]json.RawMessage{}
	if from == "" {
		// An empty configuration.
	} else if b, err := os.ReadFile(filepath.Join(from, "config.json")); err == nil {
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, fmt.Errorf("ferry: docker config %s: %w", filepath.Join(from, "config.json"), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("ferry: docker config: %w", err)
	}
	if a, ok := cfg["auths"]; ok {
		var m map[string]json.RawMessage
		_ = json.Unmarshal(a, &m)
		res.DroppedAuths = len(m)
	}
	for _, k := range []string{"auths", "credsStore", "credHelpers"} {
		delete(cfg, k)
	}
	if c, ok := cfg["currentContext"]; ok {
		_ = json.Unmarshal(c, &res.CurrentContext)
	}
	if err := addPluginsDir(cfg, from, res); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(cfg, "", "\t")
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		return nil, fmt.Errorf("ferry: docker config: %w", err)
	}
	if from == "" {
		return res, nil
	}
	metas, _ := os.ReadDir(filepath.Join(from, "contexts", "meta"))
	for _, m := range metas {
		src := filepath.Join(from, "contexts", "meta", m.Name(), "meta.json")
		b, err := os.ReadFile(src)
		if err != nil || !m.IsDir() {
			continue
		}
		var meta map[string]any
		if err := json.Unmarshal(b, &meta); err != nil {
			continue
		}
		name, _ := meta["Name"].(string)
		if eps, ok := meta["Endpoints"].(map[string]any); ok {
			if d, ok := eps["docker"].(map[string]any); ok {
				if host, _ := d["Host"].(string); strings.HasPrefix(host, "ssh://") {
					sock := socketFor(m.Name())
					d["Host"] = "unix://" + sock
					res.SSHContexts = append(res.SSHContexts, Context{Name: name, URL: host, Socket: sock})
				}
			}
		}
		out, _ := json.Marshal(meta)
		dst := filepath.Join(dir, "contexts", "meta", m.Name())
		if err := os.MkdirAll(dst, 0o700); err != nil {
			return nil, fmt.Errorf("ferry: docker config: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dst, "meta.json"), out, 0o600); err != nil {
			return nil, fmt.Errorf("ferry: docker config: %w", err)
		}
	}
	// TLS material of tcp:// contexts, as is.
	if err := copyTree(filepath.Join(from, "contexts", "tls"), filepath.Join(dir, "contexts", "tls")); err != nil {
		return nil, err
	}
	return res, nil
}

// addPluginsDir keeps the runner user's CLI plugins (`docker compose` v2,
// buildx) working in the job: the docker CLI looks for them in
// <DOCKER_CONFIG>/cli-plugins of the config dir it is given, then in the
// config's cliPluginsExtraDirs, then in system dirs. The runner's dir is
// listed there rather than copied (a plugin is ~100 MB) or symlinked (the
// job would then write through the link into the runner user's dir); the
// job's own cli-plugins dir, searched first, stays the job's.
func addPluginsDir(cfg map[string]json.RawMessage, from string, res *Result) error {
	if from == "" {
		return nil
	}
	dir, err := filepath.Abs(filepath.Join(from, "cli-plugins"))
	if err != nil {
		return fmt.Errorf("ferry: docker config: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil
	}
	var extra []string
	if raw, ok := cfg["cliPluginsExtraDirs"]; ok {
		if err := json.Unmarshal(raw, &extra); err != nil {
			return fmt.Errorf("ferry: docker config %s: cliPluginsExtraDirs: %w", filepath.Join(from, "config.json"), err)
		}
	}
	if !slices.Contains(extra, dir) {
		extra = append(extra, dir)
	}
	b, _ := json.Marshal(extra)
	cfg["cliPluginsExtraDirs"] = b
	res.PluginsDir = dir
	return nil
}

// ContextHash is the directory name docker uses for a context's metadata.
func ContextHash(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:])
}

func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("ferry: docker config: %w", err)
		}
		return os.WriteFile(dst, b, 0o600)
	})
}

// MaxLoginPassword is the longest masked value LoginSecrets is given as a
// password: registry tokens (a cloud registry's are a few KiB) fit many
// times over; a longer masked value is a document, not a password, and its
// login form would be another copy of it per user for every stage to mask.
const MaxLoginPassword = 64 << 10

// LoginSecrets returns the `auth` values docker login would write for the
// job's likely registry logins: base64(user:password) for each password
// (masked values) with each user the job may log in as. pkg/redact adds
// their other encodings.
func LoginSecrets(users, passwords []string) []string {
	var out []string
	for _, p := range passwords {
		if p == "" {
			continue
		}
		for _, u := range users {
			if u == "" {
				continue
			}
			out = append(out, b64(u+":"+p))
		}
	}
	return out
}
