package kubecreds

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// parseKubeconfig loads and sanity-checks kubeconfig bytes. clientcmd.Load
// accepts any YAML map (an empty Config), so ferry also requires a cluster:
// otherwise a deployment.yml pasted into the variable would "load".
func parseKubeconfig(data []byte) (*clientcmdapi.Config, error) {
	var head struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err == nil && head.Kind != "" && head.Kind != "Config" {
		return nil, fmt.Errorf("it is a %s (kind: %s), not a kubeconfig (kind: Config): it defines no cluster", head.Kind, head.Kind)
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		// Errors from the YAML/JSON decoders name lines and types, not
		// values; the redactor covers the rest.
		return nil, fmt.Errorf("%w", err)
	}
	if len(cfg.Clusters) == 0 {
		return nil, fmt.Errorf("it defines no cluster (want a kubeconfig: kind: Config with clusters, users and contexts)")
	}
	for name, cl := range cfg.Clusters {
		if cl.Server == "" {
			return nil, fmt.Errorf("cluster %q has no server URL", name)
		}
	}
	// Clear what clientcmd.Load records about where the data came from:
	// it would be written out again as file paths.
	for _, cl := range cfg.Clusters {
		cl.LocationOfOrigin = ""
	}
	for _, a := range cfg.AuthInfos {
		a.LocationOfOrigin = ""
	}
	for _, c := range cfg.Contexts {
		c.LocationOfOrigin = ""
	}
	return cfg, nil
}

// checkPolicy refuses what a kubeconfig from a CI variable may not do on the
// runner host and collects warnings. All contexts are checked, not only the
// selected one: the job's script may switch context.
func checkPolicy(c *Creds, opt Options) error {
	cfg := c.Config
	for _, name := range sortedKeys(cfg.Clusters) {
		cl := cfg.Clusters[name]
		if cl.CertificateAuthority != "" {
			return fileRefError(c.Variable, "cluster", name, "certificate-authority", cl.CertificateAuthority, "certificate-authority-data")
		}
		if cl.InsecureSkipTLSVerify {
			if opt.RefuseInsecure {
				return errorf(c.Variable, "cluster %q sets insecure-skip-tls-verify, which this runner refuses; use certificate-authority-data", name)
			}
			c.Warnings = append(c.Warnings, fmt.Sprintf("Warning: cluster %q in %s sets insecure-skip-tls-verify: the API server's identity is not checked, so the token can be stolen by anyone in the network path. Use certificate-authority-data.", name, c.Variable))
		}
	}
	for _, name := range sortedKeys(cfg.AuthInfos) {
		a := cfg.AuthInfos[name]
		switch {
		case a.ClientCertificate != "":
			return fileRefError(c.Variable, "user", name, "client-certificate", a.ClientCertificate, "client-certificate-data")
		case a.ClientKey != "":
			return fileRefError(c.Variable, "user", name, "client-key", a.ClientKey, "client-key-data")
		case a.TokenFile != "":
			return fileRefError(c.Variable, "user", name, "tokenFile", a.TokenFile, "token")
		}
		if a.Exec != nil && !opt.AllowExec {
			return errorf(c.Variable, "user %q uses an exec credential plugin (%s), which would run a command on the runner host; this runner does not allow it (admin: --kube-allow-exec)", name, a.Exec.Command)
		}
		if a.AuthProvider != nil && !opt.AllowExec {
			return errorf(c.Variable, "user %q uses the auth-provider %q, which runs code on the runner host; this runner does not allow it (admin: --kube-allow-exec)", name, a.AuthProvider.Name)
		}
	}
	return nil
}

func fileRefError(variable, kind, name, field, path, inline string) error {
	return errorf(variable, "%s %q refers to the file %s (%s); a kubeconfig in a CI variable must carry its data inline (%s), it may not read files on the runner host", kind, name, path, field, inline)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// configSecrets lists what in a kubeconfig is secret: tokens, passwords,
// client keys (as PEM, each line of their PEM body, and as the base64 a
// kubeconfig stores them in), auth-provider settings and exec environment
// values. CA certificates and server URLs are public.
func configSecrets(cfg *clientcmdapi.Config) []string {
	var s []string
	for _, a := range cfg.AuthInfos {
		s = append(s, a.Token, a.Password)
		for _, key := range [][]byte{a.ClientKeyData} {
			if len(key) == 0 {
				continue
			}
			s = append(s, string(key), strings.TrimSpace(string(key)), base64.StdEncoding.EncodeToString(key))
			sc := bufio.NewScanner(bytes.NewReader(key))
			for sc.Scan() {
				if line := strings.TrimSpace(sc.Text()); !strings.HasPrefix(line, "-----") {
					s = append(s, line)
				}
			}
		}
		if a.AuthProvider != nil {
			for _, v := range a.AuthProvider.Config {
				s = append(s, v)
			}
		}
		if a.Exec != nil {
			for _, e := range a.Exec.Env {
				s = append(s, e.Value)
			}
		}
	}
	return s
}
