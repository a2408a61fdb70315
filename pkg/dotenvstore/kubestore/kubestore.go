// Package kubestore is the Kubernetes Secrets backend of dotenvstore. It is
// its own package because it links client-go, which only ferry's engine
// binary may (docs/executor.md, "Two binaries in one file").
package kubestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"gitlab.com/ferry-ci/ferry/pkg/dotenvstore"
)

// Labels and annotations on the Secrets of the Kubernetes backend.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedByValue   = "ferry-dotenv"
	LabelServer      = "dotenv.ferry-ci.gitlab.com/server" // Key.ServerHash
	LabelProject     = "dotenv.ferry-ci.gitlab.com/project-id"
	LabelPipeline    = "dotenv.ferry-ci.gitlab.com/pipeline-id"
	LabelJob         = "dotenv.ferry-ci.gitlab.com/job-id"
	AnnotationExpiry = "dotenv.ferry-ci.gitlab.com/expires" // RFC 3339; absent: never
	AnnotationServer = "dotenv.ferry-ci.gitlab.com/server-url"
	AnnotationName   = "dotenv.ferry-ci.gitlab.com/job-name"
	secretDataKey    = "report.json"
)

// Store stores each report as a Secret `ferry-dotenv-<server-hash>-<job-id>`
// in one namespace (the runner admin's choice; the credentials need get,
// create, update, list and delete on secrets there, nothing else). Values
// are in the Secret's data, so they get whatever encryption at rest and
// RBAC the cluster gives Secrets.
type Store struct {
	client    corev1client.SecretsGetter
	namespace string
}

// New returns a store writing Secrets in namespace through cfg.
func New(cfg *rest.Config, namespace string) (*Store, error) {
	if namespace == "" {
		return nil, errors.New("dotenvstore: --dotenv-namespace is required with --dotenv-store=kubernetes")
	}
	c := rest.CopyConfig(cfg)
	c.UserAgent = "ferry-dotenv"
	cs, err := corev1client.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("dotenvstore: kubernetes client: %w", err)
	}
	return &Store{client: cs, namespace: namespace}, nil
}

// SecretName is the Secret holding k's report.
func SecretName(k dotenvstore.Key) string {
	return "ferry-dotenv-" + k.ServerHash() + "-" + strconv.FormatInt(k.JobID, 10)
}

// Put implements dotenvstore.Store (create, or update when the job stored before).
func (s *Store) Put(ctx context.Context, k dotenvstore.Key, r *dotenvstore.Report) error {
	if err := k.Check(); err != nil {
		return err
	}
	r.Fill(k)
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("dotenvstore: encode report of %s: %w", k, err)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      SecretName(k),
			Namespace: s.namespace,
			Labels: map[string]string{
				LabelManagedBy: ManagedByValue,
				LabelServer:    k.ServerHash(),
				LabelProject:   strconv.FormatInt(k.ProjectID, 10),
				LabelPipeline:  strconv.FormatInt(k.PipelineID, 10),
				LabelJob:       strconv.FormatInt(k.JobID, 10),
			},
			Annotations: map[string]string{AnnotationServer: r.ServerURL, AnnotationName: k.JobName},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{secretDataKey: b},
	}
	if !r.Expires.IsZero() {
		sec.Annotations[AnnotationExpiry] = r.Expires.UTC().Format(time.RFC3339)
	}
	api := s.client.Secrets(s.namespace)
	_, err = api.Create(ctx, sec, metav1.CreateOptions{FieldManager: "ferry"})
	if apierrors.IsAlreadyExists(err) {
		var cur *corev1.Secret
		if cur, err = api.Get(ctx, sec.Name, metav1.GetOptions{}); err == nil {
			sec.ResourceVersion = cur.ResourceVersion
			_, err = api.Update(ctx, sec, metav1.UpdateOptions{FieldManager: "ferry"})
		}
	}
	if err != nil {
		return fmt.Errorf("dotenvstore: store report of %s as secret %s/%s: %w", k, s.namespace, sec.Name, err)
	}
	return nil
}

// Get implements dotenvstore.Store.
func (s *Store) Get(ctx context.Context, k dotenvstore.Key) (*dotenvstore.Report, error) {
	if err := k.Check(); err != nil {
		return nil, err
	}
	name := SecretName(k)
	sec, err := s.client.Secrets(s.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("dotenvstore: %s: %w", k, dotenvstore.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dotenvstore: read secret %s/%s: %w", s.namespace, name, err)
	}
	var r dotenvstore.Report
	if err := json.Unmarshal(sec.Data[secretDataKey], &r); err != nil {
		return nil, fmt.Errorf("dotenvstore: secret %s/%s: %w: %w", s.namespace, name, dotenvstore.ErrInvalid, err)
	}
	if r.JobID != k.JobID {
		return nil, fmt.Errorf("dotenvstore: secret %s/%s holds job %d, not %d: %w", s.namespace, name, r.JobID, k.JobID, dotenvstore.ErrInvalid)
	}
	if r.Expired(time.Now()) {
		return nil, fmt.Errorf("dotenvstore: %s: expired %s: %w", k, r.Expires.Format(time.RFC3339), dotenvstore.ErrNotFound)
	}
	return &r, nil
}

// Sweep implements dotenvstore.Store: it lists ferry's report Secrets by label, a page
// at a time, and deletes those whose expiry annotation has passed.
func (s *Store) Sweep(ctx context.Context, now time.Time) (int, error) {
	api := s.client.Secrets(s.namespace)
	opts := metav1.ListOptions{LabelSelector: LabelManagedBy + "=" + ManagedByValue + "," + LabelJob, Limit: 500}
	removed := 0
	var errs []error
	for {
		list, err := api.List(ctx, opts)
		if err != nil {
			return removed, fmt.Errorf("dotenvstore: list secrets in %s: %w", s.namespace, errors.Join(append(errs, err)...))
		}
		for _, sec := range list.Items {
			v, ok := sec.Annotations[AnnotationExpiry]
			if !ok {
				continue
			}
			exp, err := time.Parse(time.RFC3339, v)
			if err != nil {
				errs = append(errs, fmt.Errorf("dotenvstore: secret %s/%s: %s: %w", s.namespace, sec.Name, AnnotationExpiry, err))
				continue
			}
			if now.Before(exp) {
				continue
			}
			// Only the version that was listed: a report stored again
			// meanwhile stays.
			pre := metav1.Preconditions{UID: &sec.UID, ResourceVersion: &sec.ResourceVersion}
			err = api.Delete(ctx, sec.Name, metav1.DeleteOptions{Preconditions: &pre})
			switch {
			case err == nil:
				removed++
			case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
			default:
				errs = append(errs, fmt.Errorf("dotenvstore: delete secret %s/%s: %w", s.namespace, sec.Name, err))
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	return removed, errors.Join(errs...)
}
