package kubecreds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/ferry-ci/ferry/pkg/jobstate"
)

// Kubeconfig returns the job's kubeconfig file content.
func (c *Creds) Kubeconfig() ([]byte, error) {
	data, err := clientcmd.Write(*c.Config)
	if err != nil {
		return nil, fmt.Errorf("ferry: %s: cannot write the kubeconfig: %w", c.Variable, err)
	}
	return data, nil
}

// WriteFile writes the kubeconfig to path, mode 0600, atomically, creating
// the directory with mode 0700 if needed. path must be in the job's state
// directory, never in the build directory.
func (c *Creds) WriteFile(path string) error {
	data, err := c.Kubeconfig()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ferry: kubeconfig: %w", err)
	}
	return jobstate.WriteFileAtomic(path, data)
}

// Identity is what the preflight learned about the credentials.
type Identity struct {
	Server    string
	Version   string // the API server's git version, e.g. v1.37.2
	User      string // as the API server authenticated it
	Namespace string
}

// String is the one line ferry prints in the job log.
func (id Identity) String() string {
	return fmt.Sprintf("Kubernetes %s (%s) as %s, namespace %s", id.Server, id.Version, id.User, id.Namespace)
}

// RESTConfig returns the client configuration of the selected context.
func (c *Creds) RESTConfig() (*rest.Config, error) {
	rc, err := clientcmd.NewDefaultClientConfig(*c.Config, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, errorf(c.Variable, "invalid kubeconfig: %v", err)
	}
	return rc, nil
}

// Preflight reaches the API server with the credentials within timeout and
// asks who they authenticate as (SelfSubjectReview, authentication.k8s.io/v1).
// Errors name the variable and say what to fix; see the package comment for
// how they are classified.
func Preflight(ctx context.Context, c *Creds, timeout time.Duration) (Identity, error) {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	id := Identity{Server: c.Server(), Namespace: c.Namespace()}
	rc, err := c.RESTConfig()
	if err != nil {
		return id, err
	}
	rc.Timeout = timeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return id, errorf(c.Variable, "invalid kubeconfig: %v", err)
	}
	// /version first: readable by anyone, it separates "cannot reach or
	// trust the server" from "the server does not accept the credentials".
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return id, c.classify(err, timeout)
	}
	if v, err := parseVersion(body); err == nil {
		id.Version = v
	}
	ssr, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	switch {
	case err == nil:
		id.User = ssr.Status.UserInfo.Username
	case apierrors.IsNotFound(err):
		// Servers before 1.28 have no SelfSubjectReview: say so, not fail.
		id.User = "(unknown: the server has no SelfSubjectReview API)"
	default:
		return id, c.classify(err, timeout)
	}
	return id, nil
}

func parseVersion(body []byte) (string, error) {
	// {"major": "1", ..., "gitVersion": "v1.37.2", ...}
	const key = `"gitVersion"`
	s := string(body)
	i := strings.Index(s, key)
	if i < 0 {
		return "", errors.New("no gitVersion")
	}
	s = s[i+len(key):]
	a := strings.Index(s, `"`)
	if a < 0 {
		return "", errors.New("bad gitVersion")
	}
	b := strings.Index(s[a+1:], `"`)
	if b < 0 {
		return "", errors.New("bad gitVersion")
	}
	return s[a+1 : a+1+b], nil
}

// classify turns a client error into one clear line naming the variable.
func (c *Creds) classify(err error, timeout time.Duration) error {
	server := c.Server()
	var (
		unknownCA *x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		recordHdr tls.RecordHeaderError
		netErr    net.Error
		opErr     *net.OpError
		dnsErr    *net.DNSError
	)
	switch {
	case apierrors.IsUnauthorized(err):
		return errorf(c.Variable, "the API server %s rejected the credentials (401 Unauthorized): the token or certificate is wrong, expired or revoked", server)
	case apierrors.IsForbidden(err):
		return errorf(c.Variable, "the API server %s refused the credentials (403 Forbidden): %v", server, apiMessage(err))
	case errors.As(err, &unknownCA):
		return errorf(c.Variable, "TLS: the certificate of %s is not signed by the cluster's certificate-authority-data (x509: unknown authority): wrong or missing CA", server)
	case errors.As(err, &hostname):
		return errorf(c.Variable, "TLS: the certificate of %s is not valid for that host name: %v", server, hostname.Error())
	case errors.As(err, &invalid), errors.As(err, &verify):
		return errorf(c.Variable, "TLS verification of %s failed: %v", server, rootCause(err))
	case errors.As(err, &recordHdr):
		return errorf(c.Variable, "%s does not speak TLS (is the server URL http:// or the port wrong?)", server)
	case isServerError(err):
		// The cluster is there but failing: a retry may help.
		return fmt.Errorf("ferry: %s: the API server %s failed: %v", c.Variable, server, apiMessage(err))
	case errors.As(err, &dnsErr), errors.As(err, &opErr), errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded):
		return errorf(c.Variable, "cannot reach the API server %s within %s: %v", server, timeout, rootCause(err))
	default:
		return errorf(c.Variable, "the API server %s: %v", server, rootCause(err))
	}
}

func isServerError(err error) bool {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return st.Status().Code >= 500
	}
	return false
}

func apiMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Message != "" {
		return st.Status().Message
	}
	return err.Error()
}

// rootCause is the innermost error's text: client-go wraps errors in
// "Get \"https://...\": ..." layers that repeat the URL.
func rootCause(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}
