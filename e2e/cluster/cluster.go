// Package cluster starts a real Kubernetes API server for ferry's tests,
// benchmarks and demo: kube-apiserver (k8s.io/kubernetes v1.37.2, the code of
// the real binary, started in-process through its own test entry point
// StartTestServer) backed by a real embedded etcd, both on loopback ports
// picked by the kernel, with RBAC authorization and ServiceAccount tokens.
//
// No controller-manager runs, so two controllers ferry's tests depend on run
// in-process instead:
//   - the real cluster-role aggregation controller
//     (k8s.io/kubernetes/pkg/controller/clusterroleaggregation), so the
//     built-in "admin", "edit" and "view" ClusterRoles carry their rules and a
//     RoleBinding to "admin" grants what it grants on a real cluster;
//   - a rollout simulator (Options.SimulateRollouts) standing in for the
//     deployment/statefulset/daemonset/job controllers plus kubelets: it moves
//     the status of those objects the way the controllers report a finished
//     rollout, so readiness waiting (kstatus) sees them become Current. An
//     object annotated NeverReadyAnnotation is left alone, for timeout tests.
//     Without the simulator, MarkDeploymentAvailable does the same for one
//     Deployment when the test says so. No pods are ever created.
//
// Typical use in a test package:
//
//	var c *cluster.Cluster
//	func TestMain(m *testing.M) { cluster.Main(m, &c, cluster.Options{SimulateRollouts: true}) }
//
//	c.URL, c.CACertPEM, c.AdminKubeconfigPath, c.AdminRESTConfig(), c.Client()
//	sa, err := c.ServiceAccountCredentials(ctx, "example", "gitlab-example", "admin")
//	// sa.Token, sa.Kubeconfig, sa.KubeconfigBase64, sa.KubeURL, sa.KubeToken, sa.KubeCAPEM, sa.KubeNamespace
//
// Each cluster has its own ports and its own directory under os.TempDir
// (ferry-cluster-*), so several can run in one test binary; Stop closes
// every listener and removes the directory. A test binary killed before Stop
// (go test -timeout) leaves its directory, and the API server's certificate
// directory (kubernetes-kube-apiserver*), behind; the next Start removes
// those whose owning process is gone.
//
// Never build tests that use this package with -trimpath: StartTestServer
// finds its fixtures through runtime.Caller.
package cluster

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
	apiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
	"k8s.io/kubernetes/pkg/controller/clusterroleaggregation"
)

// NeverReadyAnnotation on a Deployment, StatefulSet, DaemonSet or Job makes
// the rollout simulator leave its status alone, so it never becomes ready.
const NeverReadyAnnotation = "e2e.ferry/never-ready"

// Options tune a cluster.
type Options struct {
	// SimulateRollouts runs the rollout simulator (see the package doc).
	SimulateRollouts bool
	// RolloutDelay is how long the simulator waits after an object's spec
	// changed before reporting it rolled out (default 300ms), so progress
	// output can be seen.
	RolloutDelay time.Duration
	// Logf receives the server's progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Cluster is a running API server with its etcd.
type Cluster struct {
	// URL is the API server's address, https://127.0.0.1:<port>.
	URL string
	// CACertPEM verifies the serving certificate (PEM).
	CACertPEM []byte
	// AdminKubeconfigPath is a kubeconfig file with full (system:masters)
	// rights that verifies TLS against CACertPEM.
	AdminKubeconfigPath string
	// Dir holds the kubeconfig files written for this cluster.
	Dir string

	admin    *rest.Config
	client   kubernetes.Interface
	cancel   context.CancelFunc
	tb       *tb
	server   apiservertesting.TestServer
	etcd     *embed.Etcd
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// Start runs etcd and kube-apiserver on loopback and waits until the server
// answers, the default namespace exists and the aggregated admin role is
// filled. It typically takes 3 to 5 seconds.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	quietKlog(opts.Logf == nil)
	if opts.RolloutDelay == 0 {
		opts.RolloutDelay = 300 * time.Millisecond
	}
	sweepStale(os.TempDir())
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("cluster: temp dir: %w", err)
	}
	c = &Cluster{Dir: dir, tb: newTB(opts.Logf, dir)}
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cluster: temp dir: %w", err)
	}
	defer func() {
		if err != nil {
			c.Stop()
			c = nil
		}
	}()

	c.etcd, err = startEtcd(filepath.Join(dir, "etcd"))
	if err != nil {
		return c, err
	}
	storage := storagebackend.NewDefaultConfig("/registry", nil)
	storage.Transport.ServerList = []string{c.etcd.Clients[0].Addr().String()}
	storage.Transport.ServerList[0] = "http://" + storage.Transport.ServerList[0]

	srvOpts := apiservertesting.NewDefaultTestServerOptions()
	// The metrics invariant check scrapes metrics at teardown; it is for
	// Kubernetes' own tests and only slows ours down.
	srvOpts.DisableInvariantChecks = true
	flags := []string{
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
	}
	if err := c.tb.run(func() {
		c.server, err = apiservertesting.StartTestServer(c.tb, srvOpts, flags, storage)
	}); err != nil {
		return c, fmt.Errorf("cluster: start kube-apiserver: %w", err)
	}
	if err != nil {
		return c, fmt.Errorf("cluster: start kube-apiserver: %w", err)
	}

	// StartTestServer keeps its certificates in a directory of its own
	// under os.TempDir; note it, so a sweep after a killed test binary
	// finds it too.
	if err := os.WriteFile(filepath.Join(dir, serverDirFile), []byte(c.server.TmpDir), 0o600); err != nil {
		return c, fmt.Errorf("cluster: note the server's directory: %w", err)
	}

	c.admin = rest.CopyConfig(c.server.ClientConfig)
	c.admin.QPS, c.admin.Burst = 1000, 2000
	c.client, err = kubernetes.NewForConfig(c.admin)
	if err != nil {
		return c, fmt.Errorf("cluster: admin client: %w", err)
	}
	port := c.server.ServerOpts.SecureServing.BindPort
	c.URL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c.CACertPEM, err = os.ReadFile(filepath.Join(c.server.TmpDir, "apiserver.crt"))
	if err != nil {
		return c, fmt.Errorf("cluster: serving certificate: %w", err)
	}
	if block, _ := pem.Decode(c.CACertPEM); block == nil {
		return c, errors.New("cluster: serving certificate is not PEM")
	}
	c.AdminKubeconfigPath = filepath.Join(dir, "admin.kubeconfig")
	if err := clientcmd.WriteToFile(*c.kubeconfig("admin", c.admin.BearerToken, "default"), c.AdminKubeconfigPath); err != nil {
		return c, fmt.Errorf("cluster: write admin kubeconfig: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.startAggregation(runCtx)
	if opts.SimulateRollouts {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			simulateRollouts(runCtx, c.client, opts.RolloutDelay, warnf(opts.Logf))
		}()
	}
	if err := c.waitAdminRole(ctx); err != nil {
		return c, err
	}
	return c, nil
}

const (
	dirPrefix     = "ferry-cluster-"
	pidFile       = "owner.pid"
	serverDirFile = "apiserver.dir"
	// serverDirPrefix is the prefix StartTestServer gives its directory.
	serverDirPrefix = "kubernetes-kube-apiserver"
)

// sweepStale removes cluster directories left behind by test binaries that
// died without calling Stop (a test timeout exits the process from a
// goroutine, so deferred and TestMain cleanups never run). A directory is
// stale when the process named in its pid file no longer exists.
func sweepStale(tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, pidFile))
		if err != nil {
			continue // not ours, or still being created
		}
		pid, err := strconv.Atoi(string(b))
		if err != nil || pid <= 0 {
			continue
		}
		// Signal 0 checks existence; EPERM means it exists under another user.
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(d, serverDirFile)); err == nil {
			// Only a directory StartTestServer made, never an arbitrary path.
			sd := filepath.Clean(string(b))
			if filepath.Dir(sd) == filepath.Clean(tmp) && strings.HasPrefix(filepath.Base(sd), serverDirPrefix) {
				os.RemoveAll(sd)
			}
		}
		os.RemoveAll(d)
	}
}

// warnf is where the harness reports its own problems: the caller's Logf,
// or stderr when the caller discards the server's chatter, because a
// silently failing simulator would look like a ferry bug.
func warnf(logf func(string, ...any)) func(string, ...any) {
	if logf != nil {
		return logf
	}
	return func(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e/cluster: "+format+"\n", args...) }
}

// quietKlog keeps the API server's klog lines (hundreds per start) out of
// test and demo output unless the caller asked for a log.
func quietKlog(quiet bool) {
	if !quiet {
		return
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
}

// startEtcd runs an embedded single-member etcd on loopback. Its ports are
// picked by binding ":0" first; a port taken in between makes StartEtcd fail,
// so it is retried.
func startEtcd(dir string) (*embed.Etcd, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		cfg := embed.NewConfig()
		cfg.Dir = dir
		// A throwaway single-member store: fsync buys nothing here.
		cfg.UnsafeNoFsync = true
		client := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))}
		peer := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.LogLevel = "error"
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			os.RemoveAll(dir)
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			return e, nil
		case <-time.After(60 * time.Second):
			e.Close()
			return nil, errors.New("cluster: etcd took more than 60s to start")
		}
	}
	return nil, fmt.Errorf("cluster: start etcd: %w", lastErr)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cluster: pick a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startAggregation runs the real cluster-role aggregation controller, which
// fills admin/edit/view from the roles that aggregate into them.
func (c *Cluster) startAggregation(ctx context.Context) {
	factory := informers.NewSharedInformerFactory(c.client, 0)
	ctrl := clusterroleaggregation.NewClusterRoleAggregation(factory.Rbac().V1().ClusterRoles(), c.client.RbacV1())
	factory.Start(ctx.Done())
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctrl.Run(ctx, 1)
		factory.Shutdown()
	}()
}

// waitAdminRole waits until the aggregated "admin" ClusterRole has rules, so
// credentials bound to it work from the first request.
func (c *Cluster) waitAdminRole(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		role, err := c.client.RbacV1().ClusterRoles().Get(ctx, "admin", metav1.GetOptions{})
		if err == nil && len(role.Rules) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: ClusterRole admin still has no rules after 30s (aggregation controller): %v", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// AdminRESTConfig returns a copy of the admin client configuration (loopback
// token, QPS 1000).
func (c *Cluster) AdminRESTConfig() *rest.Config { return rest.CopyConfig(c.admin) }

// Client returns an admin clientset.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// kubeconfig builds a kubeconfig with one cluster, one user (token) and one
// current context, in the shape users paste into CI variables.
func (c *Cluster) kubeconfig(user, token, namespace string) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.CACertPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[user+"@e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: user, Namespace: namespace}
	cfg.CurrentContext = user + "@e2e"
	return cfg
}

// Credentials are what a CI job is given to reach the cluster as a
// ServiceAccount, in every form ferry accepts.
type Credentials struct {
	Namespace, ServiceAccount string
	// Token is a real ServiceAccount token from the TokenRequest API.
	Token string
	// Kubeconfig is a token kubeconfig (YAML) whose current context uses Namespace.
	Kubeconfig []byte
	// KubeconfigBase64 is Kubeconfig as one line of standard base64, as
	// `base64 -w0` prints it for a masked CI variable (seed 000).
	KubeconfigBase64 string
	// KubeURL, KubeToken, KubeCAPEM, KubeNamespace are GitLab's certificate-
	// based cluster integration variables (seed 003).
	KubeURL, KubeToken, KubeCAPEM, KubeNamespace string
}

// ServiceAccountCredentials does what seed 000's author did by hand: creates
// the namespace and the ServiceAccount, binds it to ClusterRole role with a
// RoleBinding in that namespace (namespace-scoped rights), and mints a token
// valid for two hours.
func (c *Cluster) ServiceAccountCredentials(ctx context.Context, namespace, name, role string) (*Credentials, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("cluster: create namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := c.client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("cluster: create serviceaccount %s/%s: %w", namespace, name, err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + role, Namespace: namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: namespace}},
	}
	if _, err := c.client.RbacV1().RoleBindings(namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("cluster: create rolebinding %s/%s: %w", namespace, rb.Name, err)
	}
	if err := c.waitBound(ctx, namespace, name, role); err != nil {
		return nil, err
	}
	seconds := int64(2 * 60 * 60)
	tr, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster: token for %s/%s: %w", namespace, name, err)
	}
	kc, err := clientcmd.Write(*c.kubeconfig(name, tr.Status.Token, namespace))
	if err != nil {
		return nil, fmt.Errorf("cluster: kubeconfig for %s/%s: %w", namespace, name, err)
	}
	return &Credentials{
		Namespace: namespace, ServiceAccount: name,
		Token:            tr.Status.Token,
		Kubeconfig:       kc,
		KubeconfigBase64: base64.StdEncoding.EncodeToString(kc),
		KubeURL:          c.URL,
		KubeToken:        tr.Status.Token,
		KubeCAPEM:        string(c.CACertPEM),
		KubeNamespace:    namespace,
	}, nil
}

// Stop stops the controllers, the API server and etcd, and removes every
// temporary directory. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
		c.wg.Wait()
		if c.server.TearDownFn != nil {
			c.tb.run(c.server.TearDownFn)
		}
		c.tb.cleanup()
		if c.etcd != nil {
			c.etcd.Close()
		}
		c.stopErr = os.RemoveAll(c.Dir)
	})
	return c.stopErr
}

// waitBound waits until the API server's authorizer has seen the binding:
// RBAC reads bindings from an informer, so for a moment after the create
// the ServiceAccount is still refused what the role allows (a test that
// applies at once saw "forbidden" in its own namespace). It asks with a
// SubjectAccessReview for the first thing the role grants.
func (c *Cluster) waitBound(ctx context.Context, namespace, name, role string) error {
	cr, err := c.client.RbacV1().ClusterRoles().Get(ctx, role, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("cluster: clusterrole %s: %w", role, err)
	}
	attrs := authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "get", Resource: "pods"}
	for _, r := range cr.Rules {
		if len(r.Verbs) > 0 && len(r.Resources) > 0 && len(r.APIGroups) > 0 {
			attrs.Verb, attrs.Resource, attrs.Group = r.Verbs[0], r.Resources[0], r.APIGroups[0]
			break
		}
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               "system:serviceaccount:" + namespace + ":" + name,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		ResourceAttributes: &attrs,
	}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := c.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err == nil && res.Status.Allowed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: %s/%s still may not %s %s 10 s after its binding to %s (%v)", namespace, name, attrs.Verb, attrs.Resource, role, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
